output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "address" {
  description = "The database's host name."
  value       = aws_db_instance.this.address
}

output "database_name" {
  description = "The database Kiln uses."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "The master user name."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "The Secrets Manager secret holding the master password (managed by RDS)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  description = "The database's security group."
  value       = aws_security_group.db.id
}
