# The artifact bucket: datasets, checkpoints and model bundles (kiln-store).
#
# Where checkpoints live: kiln-store is content-addressed. Every object, checkpoints
# included, is a blob at <prefix>/teams/<team>/blobs/sha256/<2 hex>/<64 hex>
# (crates/kiln-store/src/key.rs); no key says "checkpoint", so no lifecycle rule can tell a
# checkpoint from a dataset by its prefix, and expiring current blobs by age would delete
# datasets and models still in use. Old checkpoints instead become garbage when a job moves
# on (the job row keeps only its newest checkpoint_key) and are deleted by
# `kiln artifacts gc --apply` (OPERATIONS.md; not built yet at the time of writing). With
# versioning on, that delete leaves a noncurrent version, which the rule below expires after
# var.noncurrent_version_days; the same rule ends overwritten versions. Incomplete multipart
# uploads (a worker killed mid-upload) are aborted after a day.

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "artifacts" {
  description         = "${var.bucket_name} artifact encryption"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdmin"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
  tags = var.tags
}

resource "aws_kms_alias" "artifacts" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.artifacts.key_id
}

resource "aws_s3_bucket" "artifacts" {
  # checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost; versioning plus RDS snapshots are the recovery story, and a region-wide loss is accepted for this deployment
  # checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: Kiln records every object it writes in PostgreSQL
  # checkov:skip=CKV_AWS_18:Server access logging needs a separate log bucket the operator owns; set var.access_log_bucket to enable it
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.artifacts.arn
    }
    # S3 asks KMS for a bucket-level key now and then instead of once per object: far
    # fewer (billed) KMS requests for the many blobs Kiln writes.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/teams/"
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "blobs-to-infrequent-access"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/teams/"
    }
    transition {
      days          = var.infrequent_access_after_days
      storage_class = "STANDARD_IA"
    }
  }

  depends_on = [aws_s3_bucket_versioning.artifacts]
}

resource "aws_s3_bucket_logging" "artifacts" {
  count         = var.access_log_bucket == "" ? 0 : 1
  bucket        = aws_s3_bucket.artifacts.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3/${var.bucket_name}/"
}

# TLS only, and only SSE-KMS with this bucket's key.
resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOldTls"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}
