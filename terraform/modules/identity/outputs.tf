output "api_role_arn" {
  description = "The API's IRSA role (chart value serviceAccount.api.roleArn)."
  value       = aws_iam_role.this["api"].arn
}

output "worker_role_arn" {
  description = "The workers' IRSA role (chart value serviceAccount.worker.roleArn)."
  value       = aws_iam_role.this["worker"].arn
}
