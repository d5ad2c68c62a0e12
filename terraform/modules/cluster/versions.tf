terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    # Configured by the root module (environments/*) against this cluster.
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
  }
}
