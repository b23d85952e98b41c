# The output contract every Paybill module meets.
output "endpoint" {
  value = "gs://${google_storage_bucket.tenant.name}"
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
  value = google_compute_network.tenant.id
}

output "subnet_ids" {
  value = [google_compute_subnetwork.tenant.id]
}
