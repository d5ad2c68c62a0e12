variable "name" {
  description = "Prefix of every resource name, e.g. kiln-dev."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones to spread subnets over (EKS needs at least two)."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "The EKS cluster's name, for the subnet tags its load balancer controller reads."
  type        = string
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
