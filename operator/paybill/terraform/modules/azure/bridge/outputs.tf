# The output contract every Paybill module meets.
output "endpoint" {
  value = "postgresql://${azurerm_postgresql_flexible_server.tenant.fqdn}:5432"
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
  value = data.azurerm_virtual_network.pool.id
}

output "subnet_ids" {
  value = [data.azurerm_subnet.compute.id, data.azurerm_subnet.database.id]
}
