variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment name: part of every resource name."
  type        = string
  default     = "dev"
}

variable "availability_zones" {
  description = "Zones to use (two or more). GPU instance types are not offered in every zone: check `aws ec2 describe-instance-type-offerings`."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]
}

variable "artifact_bucket_name" {
  description = "The artifact bucket's name: globally unique, so include your account id or a suffix."
  type        = string
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API endpoint (your IP as x.x.x.x/32). Empty: private endpoint only."
  type        = list(string)
  default     = []
}

variable "gpu_instance_types" {
  description = "GPU node instance types."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_max_size" {
  description = "Most GPU nodes at once (and so most workers)."
  type        = number
  default     = 2
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_multi_az" {
  description = "A standby database in a second zone."
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database: true in prod; dev sets false so `terraform destroy` works."
  type        = bool
  default     = true
}

variable "kubernetes_namespace" {
  description = "Namespace Kiln's chart is installed in."
  type        = string
  default     = "kiln"
}

variable "image_tag" {
  description = "The image tag the chart deploys (the git commit you built and pushed)."
  type        = string
  default     = "latest-build"
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflow deploys this environment (.github/workflows/deploy.yaml). Empty: no CI role."
  type        = string
  default     = ""
}

variable "github_deploy_ref" {
  description = "The only git ref whose workflow runs may deploy."
  type        = string
  default     = "refs/heads/main"
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub Actions OIDC provider (false when the account has one already)."
  type        = bool
  default     = true
}

variable "terraform_state_bucket" {
  description = "The S3 bucket of this environment's state (versions.tf's backend), which CI reads its outputs from. Empty: CI gets no state access."
  type        = string
  default     = ""
}
