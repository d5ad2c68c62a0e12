# IRSA roles for the API and the workers: each may be assumed only by its own service
# account in Kiln's namespace, and may read and write only the artifact bucket (through its
# KMS key). The database is reached with the URL in a Kubernetes Secret, not with IAM.

locals {
  issuer = replace(var.oidc_provider_url, "https://", "")
  service_accounts = {
    api    = var.api_service_account
    worker = var.worker_service_account
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.service_accounts
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# What kiln-store does: list (readiness, gc), get, put (single and multipart), delete (gc).
data "aws_iam_policy_document" "artifacts" {
  statement {
    sid       = "ListTheBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = [var.artifact_bucket_arn]
  }
  statement {
    sid    = "ObjectsInTheBucket"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.artifact_bucket_arn}/*"]
  }
  statement {
    sid       = "TheBucketKey"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [var.artifact_kms_key_arn]
  }
}

resource "aws_iam_role" "this" {
  for_each             = local.service_accounts
  name                 = "${var.name}-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "artifacts" {
  for_each = local.service_accounts
  name     = "artifact-bucket"
  role     = aws_iam_role.this[each.key].id
  policy   = data.aws_iam_policy_document.artifacts.json
}
