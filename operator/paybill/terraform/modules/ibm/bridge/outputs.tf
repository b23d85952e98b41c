# The output contract every Paybill module meets.
output "endpoint" {
  value = data.ibm_database_connection.tenant.postgres[0].composed[0]
}

output "database_host" {
  value = data.ibm_database_connection.tenant.postgres[0].hosts[0].hostname
}

output "database_port" {
  value = data.ibm_database_connection.tenant.postgres[0].hosts[0].port
}

output "database_name" {
  value = data.ibm_database_connection.tenant.postgres[0].database
}

output "database_user" {
  value = "admin"
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = data.ibm_is_vpc.pool.id
}

output "subnet_ids" {
  value = [data.ibm_is_subnet.compute.id, data.ibm_is_subnet.database.id]
}
