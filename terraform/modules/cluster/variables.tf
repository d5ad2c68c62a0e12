variable "name" {
  description = "The EKS cluster's name."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.35"
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the control plane's interfaces and every node."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API from the internet (an operator's office or VPN). Empty: private endpoint only, reachable from inside the VPC."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (the API, KEDA, system pods)."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "cpu_min_size" {
  description = "Smallest CPU node count."
  type        = number
  default     = 2
}

variable "cpu_max_size" {
  description = "Largest CPU node count."
  type        = number
  default     = 4
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (one NVIDIA GPU each: one Kiln worker per node)."
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_max_size" {
  description = "Largest GPU node count (the group starts and idles at zero)."
  type        = number
  default     = 4
}

variable "gpu_disk_size_gb" {
  description = "Root volume of GPU nodes: the CUDA worker image is several GB, plus the dataset cache."
  type        = number
  default     = 200
}

variable "keda_chart_version" {
  description = "The kedacore/keda chart version."
  type        = string
  default     = "2.17.2"
}

variable "nvidia_device_plugin_chart_version" {
  description = "The nvidia-device-plugin chart version."
  type        = string
  default     = "0.17.1"
}

variable "cluster_autoscaler_chart_version" {
  description = "The cluster-autoscaler chart version."
  type        = string
  default     = "9.46.6"
}

variable "log_retention_days" {
  description = "How long control plane logs are kept."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
