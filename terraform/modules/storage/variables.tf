variable "bucket_name" {
  description = "The artifact bucket's name (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Key prefix Kiln writes under (KILN_ARTIFACT_STORE=s3://<bucket>/<prefix>)."
  type        = string
  default     = "kiln"
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept before S3 expires it: superseded checkpoints and what `kiln artifacts gc` removed stay recoverable this long."
  type        = number
  default     = 30
}

variable "infrequent_access_after_days" {
  description = "Days after which current objects move to S3 Standard-IA (old datasets, checkpoints and models are read rarely)."
  type        = number
  default     = 90
}

variable "access_log_bucket" {
  description = "An existing bucket for S3 server access logs; empty: none."
  type        = string
  default     = ""
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a non-empty bucket (dev only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
