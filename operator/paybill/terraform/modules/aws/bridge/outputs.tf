# The output contract every Paybill module meets.
output "endpoint" {
  value = "postgresql://${aws_db_instance.tenant.endpoint}"
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
  value = data.aws_vpc.pool.id
}

output "subnet_ids" {
  value = sort(data.aws_subnet_ids.pool.ids)
}
