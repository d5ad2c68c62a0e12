output "role_arn" {
  description = "The role GitHub Actions assumes (repository variable AWS_DEPLOY_ROLE_ARN)."
  value       = aws_iam_role.deploy.arn
}
