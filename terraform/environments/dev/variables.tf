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
