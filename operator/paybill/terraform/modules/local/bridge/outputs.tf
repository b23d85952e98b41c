# The output contract every Paybill module meets.
output "endpoint" {
  value = "https://${var.tenant_id}.${var.region}.paybill.local"
}

output "database_host" {
  value = terraform_data.database.output.host
}

output "database_port" {
  value = 5432
}

output "database_name" {
  value = terraform_data.database.output.name
}

output "database_user" {
  value = terraform_data.database.output.user
}

output "database_password" {
  value     = substr(sha256(terraform_data.credentials.id), 0, 32)
  sensitive = true
}

output "network_id" {
  value = terraform_data.network.id
}

output "subnet_ids" {
  value = [for cidr in terraform_data.subnets.output.cidrs : "${terraform_data.subnets.id}/${cidr}"]
}
