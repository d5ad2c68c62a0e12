output "repository_urls" {
  description = "Image name → repository URL (for docker push and the chart's image.*.repository)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "repository_arns" {
  description = "Image name → repository ARN (for CI's push permission)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.arn }
}
