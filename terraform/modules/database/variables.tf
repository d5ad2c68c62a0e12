variable "name" {
  description = "Prefix of every resource name, e.g. kiln-dev."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the database lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the DB subnet group (two zones at least)."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups whose members may connect on 5432: the EKS cluster's. Nothing else can."
  type        = list(string)
}

variable "engine_version" {
  description = "PostgreSQL major version (Kiln needs 14 or newer)."
  type        = string
  default     = "17"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  description = "Initial storage; autoscaling grows it up to max_allocated_storage_gb."
  type        = number
  default     = 50
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling."
  type        = number
  default     = 500
}

variable "multi_az" {
  description = "A standby in a second zone (recommended in prod)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "deletion_protection" {
  description = "Refuse to delete the instance. Keep true in prod; dev may turn it off to tear down."
  type        = bool
  default     = true
}

variable "database_name" {
  description = "The database Kiln uses."
  type        = string
  default     = "kiln"
}

variable "master_username" {
  description = "The master user; its password is generated and kept in Secrets Manager by RDS."
  type        = string
  default     = "kiln"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
