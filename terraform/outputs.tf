output "bucket_name" {
  description = "The incident bucket (archive.s3.bucket / S3_BUCKET_NAME)."
  value       = aws_s3_bucket.incidents.id
}

output "bucket_arn" {
  description = "ARN of the incident bucket."
  value       = aws_s3_bucket.incidents.arn
}

output "archive_prefix" {
  description = "Key prefix the daemon writes below (archive.s3.prefix / S3_PREFIX)."
  value       = var.archive_prefix
}

output "daemon_role_arn" {
  description = "Role of the daemon's host (its instance profile carries it)."
  value       = aws_iam_role.daemon.arn
}

output "archive_writer_policy_arn" {
  description = "The write-only policy; attach it to other roles that run the daemon (ECS tasks, EKS service accounts)."
  value       = aws_iam_policy.archive_writer.arn
}

output "instance_profile_name" {
  description = "Instance profile to attach to other EC2 hosts that run the daemon."
  value       = aws_iam_instance_profile.daemon.name
}

output "instance_id" {
  description = "The host, when create_host is on; connect with: aws ssm start-session --target <id>."
  value       = var.create_host ? aws_instance.host[0].id : null
}

output "access_key_id" {
  description = "Access key of the optional IAM user (create_access_key_user)."
  value       = var.create_access_key_user ? aws_iam_access_key.daemon[0].id : null
}

output "secret_access_key" {
  description = "Secret of the optional IAM user; read it with terraform output -raw secret_access_key."
  value       = var.create_access_key_user ? aws_iam_access_key.daemon[0].secret : null
  sensitive   = true
}
