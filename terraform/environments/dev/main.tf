# Kiln's dev environment: every module wired together. Outputs feed the Helm chart.

locals {
  name = "kiln-${var.environment}"
  tags = {
    Project     = "kiln"
    Environment = var.environment
    ManagedBy   = "terraform"
  }
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  cluster_name       = local.name
  availability_zones = var.availability_zones
  single_nat_gateway = true
  tags               = local.tags
}

module "cluster" {
  source              = "../../modules/cluster"
  name                = local.name
  vpc_id              = module.network.vpc_id
  private_subnet_ids  = module.network.private_subnet_ids
  public_access_cidrs = var.admin_cidrs
  gpu_instance_types  = var.gpu_instance_types
  gpu_max_size        = var.gpu_max_size
  tags                = local.tags
}

module "storage" {
  source        = "../../modules/storage"
  bucket_name   = var.artifact_bucket_name
  prefix        = "kiln"
  force_destroy = var.environment == "dev"
  tags          = local.tags
}

module "database" {
  source                     = "../../modules/database"
  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.cluster.cluster_security_group_id]
  instance_class             = var.db_instance_class
  multi_az                   = var.db_multi_az
  deletion_protection        = var.db_deletion_protection
  tags                       = local.tags
}

module "identity" {
  source               = "../../modules/identity"
  name                 = local.name
  oidc_provider_arn    = module.cluster.oidc_provider_arn
  oidc_provider_url    = module.cluster.oidc_provider_url
  namespace            = var.kubernetes_namespace
  artifact_bucket_arn  = module.storage.bucket_arn
  artifact_kms_key_arn = module.storage.kms_key_arn
  tags                 = local.tags
}

module "registry" {
  source       = "../../modules/registry"
  name         = local.name
  force_delete = var.environment == "dev"
  tags         = local.tags
}

module "ci" {
  source                      = "../../modules/ci"
  count                       = var.github_repository == "" ? 0 : 1
  name                        = local.name
  github_repository           = var.github_repository
  github_ref                  = var.github_deploy_ref
  create_github_oidc_provider = var.create_github_oidc_provider
  ecr_repository_arns         = values(module.registry.repository_arns)
  cluster_name                = module.cluster.cluster_name
  namespace                   = var.kubernetes_namespace
  terraform_state_bucket      = var.terraform_state_bucket
  tags                        = local.tags
}
