output "region" {
  description = "AWS region."
  value       = var.region
}

output "cluster_name" {
  description = "`aws eks update-kubeconfig --name <this>`."
  value       = module.cluster.cluster_name
}

output "ecr_repositories" {
  description = "Where to push the images."
  value       = module.registry.repository_urls
}

output "database_address" {
  description = "RDS host name (for the KILN_DATABASE_URL Secret)."
  value       = module.database.address
}

output "database_name" {
  description = "The database Kiln uses."
  value       = module.database.database_name
}

output "database_master_username" {
  description = "The database user."
  value       = module.database.master_username
}

output "database_master_secret_arn" {
  description = "Secrets Manager secret with the generated password (`aws secretsmanager get-secret-value`)."
  value       = module.database.master_user_secret_arn
}

output "artifact_store" {
  description = "KILN_ARTIFACT_STORE."
  value       = module.storage.artifact_store_url
}

# `terraform output -raw helm_values > values-dev.yaml`, then
# `helm install kiln deploy/helm/kiln -n kiln -f values-dev.yaml`.
output "helm_values" {
  description = "Values for deploy/helm/kiln that this environment decides."
  value = yamlencode({
    image = {
      api    = { repository = module.registry.repository_urls["kiln-api"], tag = var.image_tag }
      worker = { repository = module.registry.repository_urls["kiln-worker"], tag = var.image_tag }
    }
    config = {
      artifactStore = module.storage.artifact_store_url
      awsRegion     = var.region
    }
    serviceAccount = {
      api    = { name = "kiln-api", roleArn = module.identity.api_role_arn }
      worker = { name = "kiln-worker", roleArn = module.identity.worker_role_arn }
    }
    workers = {
      gpu = { enabled = true, nodeSelector = module.cluster.gpu_node_selector }
    }
    keda = {
      maxReplicaCount = var.gpu_max_size
    }
  })
}

output "ci_role_arn" {
  description = "The role .github/workflows/deploy.yaml assumes (repository variable AWS_DEPLOY_ROLE_ARN); null without github_repository."
  value       = one(module.ci[*].role_arn)
}
