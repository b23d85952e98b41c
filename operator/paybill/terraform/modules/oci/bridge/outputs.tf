# The output contract every Paybill module meets.
output "endpoint" {
  value = "postgresql://${oci_psql_db_system.tenant.network_details[0].primary_db_endpoint_private_ip}:5432"
}

output "database_host" {
  value = oci_psql_db_system.tenant.network_details[0].primary_db_endpoint_private_ip
}

output "database_port" {
  value = 5432
}

# An OCI PostgreSQL system starts with the database `postgres`; the operator makes the tenant's own in it.
output "database_name" {
  value = "postgres"
}

output "database_user" {
  value = oci_psql_db_system.tenant.credentials[0].username
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = data.oci_core_vcns.pool.virtual_networks[0].id
}

output "subnet_ids" {
  value = [data.oci_core_subnets.compute.subnets[0].id, data.oci_core_subnets.database.subnets[0].id]
}
