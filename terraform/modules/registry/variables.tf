variable "name" {
  description = "Prefix of the repository names, e.g. kiln-dev."
  type        = string
}

variable "repositories" {
  description = "Repositories to create: one per image (deploy/*.Dockerfile)."
  type        = list(string)
  default     = ["kiln-api", "kiln-worker"]
}

variable "keep_images" {
  description = "How many images each repository keeps (older ones expire)."
  type        = number
  default     = 50
}

variable "force_delete" {
  description = "Let `terraform destroy` delete repositories that still hold images (dev only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
