output "repository_urls" {
  description = "Image name → repository URL (for docker push and the chart's image.*.repository)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}
