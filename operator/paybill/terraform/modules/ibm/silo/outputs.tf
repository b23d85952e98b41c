# The output contract every Paybill module meets.
output "endpoint" {
  value = "https://${ibm_cos_bucket.tenant.s3_endpoint_private}/${ibm_cos_bucket.tenant.bucket_name}"
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
  value = ibm_is_vpc.tenant.id
}

output "subnet_ids" {
  value = [ibm_is_subnet.compute.id, ibm_is_subnet.database.id]
}
