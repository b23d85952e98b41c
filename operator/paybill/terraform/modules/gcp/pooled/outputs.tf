# The output contract every Paybill module meets.
output "endpoint" {
  value = "gs://${data.google_storage_bucket.pool.name}/${local.prefix}"
}

output "database_host" {
  value = data.google_sql_database_instance.pool.private_ip_address
}

output "database_port" {
  value = 5432
}

output "database_name" {
  value = replace(data.google_sql_database_instance.pool.name, "-", "_")
}

output "database_user" {
  value = local.user
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = data.google_compute_network.pool.id
}

output "subnet_ids" {
  value = [data.google_compute_subnetwork.pool.id]
}
