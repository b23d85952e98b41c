# The output contract every Paybill module meets.
output "endpoint" {
  value = "${azurerm_storage_account.tenant.primary_blob_endpoint}${azurerm_storage_container.tenant.name}"
}

output "database_host" {
  value = azurerm_postgresql_flexible_server.tenant.fqdn
}

output "database_port" {
  value = 5432
}

output "database_name" {
  value = azurerm_postgresql_flexible_server_database.tenant.name
}

output "database_user" {
  value = azurerm_postgresql_flexible_server.tenant.administrator_login
}

output "database_password" {
  value     = terraform_data.password.output
  sensitive = true
}

output "network_id" {
  value = azurerm_virtual_network.tenant.id
}

output "subnet_ids" {
  value = [azurerm_subnet.compute.id, azurerm_subnet.database.id]
}
