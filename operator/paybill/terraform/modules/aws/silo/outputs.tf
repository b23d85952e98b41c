# The output contract every Paybill module meets.
output "endpoint" {
  value = "s3://${aws_s3_bucket.tenant.bucket}"
}

output "database_host" {
  value = aws_db_instance.tenant.address
}

output "database_port" {
  value = aws_db_instance.tenant.port
}

output "database_name" {
  value = aws_db_instance.tenant.name
}

output "database_user" {
  value = aws_db_instance.tenant.username
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = aws_vpc.tenant.id
}

output "subnet_ids" {
  value = aws_subnet.tenant[*].id
}
