# The output contract every Paybill module meets.
output "endpoint" {
  value = "s3://${data.aws_s3_bucket.pool.bucket}/${local.prefix}"
}

output "database_host" {
  value = data.aws_db_instance.pool.address
}

output "database_port" {
  value = data.aws_db_instance.pool.port
}

output "database_name" {
  value = data.aws_db_instance.pool.db_name
}

output "database_user" {
  value = local.user
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
