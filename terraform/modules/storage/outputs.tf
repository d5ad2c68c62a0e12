output "bucket_name" {
  description = "The artifact bucket."
  value       = aws_s3_bucket.artifacts.bucket
}

output "bucket_arn" {
  description = "The artifact bucket's ARN."
  value       = aws_s3_bucket.artifacts.arn
}

output "kms_key_arn" {
  description = "The key that encrypts the artifacts."
  value       = aws_kms_key.artifacts.arn
}

output "artifact_store_url" {
  description = "KILN_ARTIFACT_STORE for the chart."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/${var.prefix}"
}
