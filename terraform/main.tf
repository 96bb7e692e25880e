# SentinelRemedy on AWS: the incident bucket (this file), the daemon's least-privilege role
# (iam.tf) and an optional host running PostgreSQL with the daemon as a sidecar (host.tf).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.name}-incidents-${data.aws_caller_identity.current.account_id}"
  use_kms     = var.kms_key_arn != ""
}

# Forensic bundles: {prefix}/{timestamp}-{target}/ with logs, configs and manifest.json.
resource "aws_s3_bucket" "incidents" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket per account; enable it in your logging account (bundles are written only by the daemon's role).
  #checkov:skip=CKV_AWS_144:Cross-region replication is a per-organisation choice and doubles the cost; versioning protects the bundles here.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; the daemon alerts through its own webhooks.
  #checkov:skip=CKV_AWS_145:SSE-KMS is available through var.kms_key_arn; SSE-S3 is the cost-free default.
  bucket = local.bucket_name
}

resource "aws_s3_bucket_ownership_controls" "incidents" {
  bucket = aws_s3_bucket.incidents.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "incidents" {
  bucket                  = aws_s3_bucket.incidents.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "incidents" {
  bucket = aws_s3_bucket.incidents.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "incidents" {
  bucket = aws_s3_bucket.incidents.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.use_kms ? "aws:kms" : "AES256"
      kms_master_key_id = local.use_kms ? var.kms_key_arn : null
    }
    bucket_key_enabled = local.use_kms
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "incidents" {
  bucket = aws_s3_bucket.incidents.id

  rule {
    id     = "bundles"
    status = "Enabled"

    filter {
      prefix = "${var.archive_prefix}/"
    }

    transition {
      days          = var.transition_days
      storage_class = "STANDARD_IA"
    }

    expiration {
      days = var.expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.expiration_days
    }
  }

  # Parts of an upload cut short (the daemon aborts them, but a killed daemon cannot).
  rule {
    id     = "abort-incomplete-multipart"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.incidents]
}

# TLS only; and, with SSE-KMS, no object written without it.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.incidents.arn,
      "${aws_s3_bucket.incidents.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "incidents" {
  bucket = aws_s3_bucket.incidents.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.incidents]
}
