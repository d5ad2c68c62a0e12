variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "github_repository" {
  description = "The GitHub repository whose workflows may deploy, as owner/name."
  type        = string
}

variable "github_ref" {
  description = "The git ref whose workflow runs may assume the role (deploys come from this branch only)."
  type        = string
  default     = "refs/heads/main"
}

variable "github_environment" {
  description = "The GitHub environment of the deploy job, whose runs may assume the role too."
  type        = string
  default     = "dev"
}

variable "create_github_oidc_provider" {
  description = "Create the account's IAM OIDC provider for token.actions.githubusercontent.com (one per account: false when it exists already)."
  type        = bool
  default     = true
}

variable "ecr_repository_arns" {
  description = "The ECR repositories CI pushes to (registry module output repository_arns)."
  type        = list(string)
}

variable "cluster_name" {
  description = "The EKS cluster CI deploys to (cluster module output cluster_name)."
  type        = string
}

variable "namespace" {
  description = "The Kubernetes namespace CI may change (the chart's release namespace)."
  type        = string
}

variable "terraform_state_bucket" {
  description = "The S3 bucket of the environment's terraform state, which CI reads for its outputs (empty: no access)."
  type        = string
  default     = ""
}

variable "terraform_state_key" {
  description = "The state object's key in terraform_state_bucket."
  type        = string
  default     = "kiln/dev/terraform.tfstate"
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
