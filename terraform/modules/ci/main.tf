# CI/CD's identity (.github/workflows/deploy.yaml): GitHub Actions assumes this role through
# OIDC, so no long-lived AWS key exists anywhere. Only workflow runs of one repository on
# one ref may assume it; it may push Kiln's images to its ECR repositories, describe the
# cluster, and change what is in Kiln's namespace (an EKS access entry scoped to it).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  github_issuer = "token.actions.githubusercontent.com"
  github_oidc_arn = (var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn :
  "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:oidc-provider/${local.github_issuer}")
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_github_oidc_provider ? 1 : 0
  url            = "https://${local.github_issuer}"
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.github_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.github_issuer}:sub"
      # A job without an environment presents its ref; one with an environment (the deploy
      # job: "dev", where reviewers can gate it) presents the environment instead.
      values = [
        "repo:${var.github_repository}:ref:${var.github_ref}",
        "repo:${var.github_repository}:environment:${var.github_environment}",
      ]
    }
  }
}

resource "aws_iam_role" "deploy" {
  name                 = "${var.name}-github-deploy"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

data "aws_iam_policy_document" "deploy" {
  # checkov:skip=CKV_AWS_111:ecr:GetAuthorizationToken has no resource-level permissions; AWS requires "*" for it
  # checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource-level permissions; AWS requires "*" for it
  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid    = "PushKilnImages"
    effect = "Allow"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
      "ecr:DescribeImages", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart",
    ]
    resources = var.ecr_repository_arns
  }
  # `terraform output` in scripts/ci-deploy.sh: read the state, never write it.
  dynamic "statement" {
    for_each = var.terraform_state_bucket == "" ? [] : [1]
    content {
      sid       = "ReadTerraformState"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.terraform_state_bucket}/${var.terraform_state_key}"]
    }
  }
  dynamic "statement" {
    for_each = var.terraform_state_bucket == "" ? [] : [1]
    content {
      sid       = "ListTerraformState"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.terraform_state_bucket}"]
    }
  }
  statement {
    sid       = "FindTheCluster"
    effect    = "Allow"
    actions   = ["eks:DescribeCluster"]
    resources = ["arn:${data.aws_partition.current.partition}:eks:*:${data.aws_caller_identity.current.account_id}:cluster/${var.cluster_name}"]
  }
}

resource "aws_iam_role_policy" "deploy" {
  name   = "${var.name}-github-deploy"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}

# Kubernetes rights: admin of Kiln's namespace only (helm upgrade --install of the chart).
resource "aws_eks_access_entry" "deploy" {
  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.deploy.arn
  type          = "STANDARD"
  tags          = var.tags
}

resource "aws_eks_access_policy_association" "deploy" {
  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.deploy.arn
  policy_arn    = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"
  access_scope {
    type       = "namespace"
    namespaces = [var.namespace]
  }
  depends_on = [aws_eks_access_entry.deploy]
}
