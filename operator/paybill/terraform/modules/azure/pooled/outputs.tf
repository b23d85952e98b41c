# The output contract every Paybill module meets.
output "endpoint" {
  value = "${data.azurerm_storage_account.pool.primary_blob_endpoint}${azurerm_storage_container.tenant.name}"
}

output "database_host" {
  value = data.azurerm_postgresql_flexible_server.pool.fqdn
}

output "database_port" {
  value = 5432
}

output "database_name" {
  value = replace(data.azurerm_resource_group.pool.name, "-", "_")
}

output "database_user" {
  value = local.user
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = data.azurerm_virtual_network.pool.id
}

output "subnet_ids" {
  value = [data.azurerm_subnet.compute.id, data.azurerm_subnet.database.id]
}
