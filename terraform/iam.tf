# The daemon's permissions: exactly the S3 calls its archive code makes (src/archive/s3.rs),
# on its own prefix. PutObject covers PutObject, CreateMultipartUpload, UploadPart and
# CompleteMultipartUpload; AbortMultipartUpload cleans up a failed multipart upload. No read,
# no list, no delete: which files are already up is kept in the daemon's spool.
data "aws_iam_policy_document" "archive_writer" {
  statement {
    sid    = "WriteIncidentBundles"
    effect = "Allow"
    actions = [
      "s3:PutObject",
      "s3:AbortMultipartUpload",
    ]
    resources = ["${aws_s3_bucket.incidents.arn}/${var.archive_prefix}/*"]
  }

  dynamic "statement" {
    for_each = local.use_kms ? [1] : []

    content {
      sid       = "EncryptWithTheBucketKey"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_policy" "archive_writer" {
  name        = "${var.name}-archive-writer"
  description = "SentinelRemedy: write forensic bundles below ${var.archive_prefix}/ in ${local.bucket_name}."
  policy      = data.aws_iam_policy_document.archive_writer.json
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "daemon" {
  name               = "${var.name}-daemon"
  description        = "Role of the host that runs the SentinelRemedy daemon."
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "daemon_archive" {
  role       = aws_iam_role.daemon.name
  policy_arn = aws_iam_policy.archive_writer.arn
}

# Session Manager instead of SSH keys (optional).
resource "aws_iam_role_policy_attachment" "daemon_ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.daemon.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "daemon" {
  name = "${var.name}-daemon"
  role = aws_iam_role.daemon.name
}

# For daemons outside AWS only (off by default): a user with the same single policy, through
# a group. Its secret lands in the Terraform state: protect the state, rotate the key.
resource "aws_iam_group" "archive_writers" {
  count = var.create_access_key_user ? 1 : 0
  name  = "${var.name}-archive-writers"
}

resource "aws_iam_group_policy_attachment" "archive_writers" {
  count      = var.create_access_key_user ? 1 : 0
  group      = aws_iam_group.archive_writers[0].name
  policy_arn = aws_iam_policy.archive_writer.arn
}

resource "aws_iam_user" "daemon" {
  #checkov:skip=CKV_AWS_273:Hosts outside AWS cannot assume an instance role or use SSO; the user is off by default and holds one write-only policy.
  count = var.create_access_key_user ? 1 : 0
  name  = "${var.name}-daemon"
}

resource "aws_iam_user_group_membership" "daemon" {
  count  = var.create_access_key_user ? 1 : 0
  user   = aws_iam_user.daemon[0].name
  groups = [aws_iam_group.archive_writers[0].name]
}

resource "aws_iam_access_key" "daemon" {
  count = var.create_access_key_user ? 1 : 0
  user  = aws_iam_user.daemon[0].name
}
