variable "name" {
  description = "Prefix of every resource name, e.g. kiln-dev."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The EKS cluster's IAM OIDC provider (cluster module output)."
  type        = string
}

variable "oidc_provider_url" {
  description = "The EKS cluster's OIDC issuer URL (cluster module output)."
  type        = string
}

variable "namespace" {
  description = "The Kubernetes namespace Kiln is installed in."
  type        = string
  default     = "kiln"
}

variable "api_service_account" {
  description = "The API's service account (chart value serviceAccount.api.name)."
  type        = string
  default     = "kiln-api"
}

variable "worker_service_account" {
  description = "The workers' service account (chart value serviceAccount.worker.name)."
  type        = string
  default     = "kiln-worker"
}

variable "artifact_bucket_arn" {
  description = "The artifact bucket: the only one the roles may touch."
  type        = string
}

variable "artifact_kms_key_arn" {
  description = "The key that encrypts the artifact bucket."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
