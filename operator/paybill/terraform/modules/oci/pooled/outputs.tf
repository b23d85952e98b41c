# The output contract every Paybill module meets.
output "endpoint" {
  value = "oci://${data.oci_objectstorage_bucket.pool.namespace}/${data.oci_objectstorage_bucket.pool.name}/${local.prefix}"
}

output "database_host" {
  value = data.oci_psql_db_system.pool.network_details[0].primary_db_endpoint_private_ip
}

output "database_port" {
  value = 5432
}

# An OCI PostgreSQL system starts with the database `postgres`; the operator keeps the pool's tables in it.
output "database_name" {
  value = "postgres"
}

output "database_user" {
  value = local.user
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
