# The pool's shared infrastructure (modules/azure/shared), found by name, never created here.
data "azurerm_resource_group" "pool" {
  name = "paybill-pool-${var.pool}"
}

data "azurerm_virtual_network" "pool" {
  name                = data.azurerm_resource_group.pool.name
  resource_group_name = data.azurerm_resource_group.pool.name
}

data "azurerm_subnet" "compute" {
  name                 = "compute"
  virtual_network_name = data.azurerm_virtual_network.pool.name
  resource_group_name  = data.azurerm_resource_group.pool.name
}

data "azurerm_subnet" "database" {
  name                 = "database"
  virtual_network_name = data.azurerm_virtual_network.pool.name
  resource_group_name  = data.azurerm_resource_group.pool.name
}

data "azurerm_private_dns_zone" "pool" {
  name                = "${data.azurerm_resource_group.pool.name}.private.postgres.database.azure.com"
  resource_group_name = data.azurerm_resource_group.pool.name
}

data "azurerm_postgresql_flexible_server" "pool" {
  name                = data.azurerm_resource_group.pool.name
  resource_group_name = data.azurerm_resource_group.pool.name
}

data "azurerm_storage_account" "pool" {
  name                = "pp${substr(sha1(var.pool), 0, 22)}"
  resource_group_name = data.azurerm_resource_group.pool.name
}
