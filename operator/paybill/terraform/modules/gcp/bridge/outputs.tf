# The output contract every Paybill module meets.
output "endpoint" {
  value = "postgresql://${google_sql_database_instance.tenant.private_ip_address}:5432"
}

output "database_host" {
  value = google_sql_database_instance.tenant.private_ip_address
}

output "database_port" {
  value = 5432
}

output "database_name" {
  value = google_sql_database.tenant.name
}

output "database_user" {
  value = google_sql_user.tenant.name
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
