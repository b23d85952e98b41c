# A pool's shared infrastructure, created once: the resource group, the network, the shared PostgreSQL flexible
# server (with its private DNS zone, which bridge tenants' servers use too), the shared storage account and the
# shared compute that azure/pooled and azure/bridge tenants find by name.
locals {
  tags = {
    "paybill-pool"        = var.pool
    "paybill-cost-center" = var.cost_center
  }
  name = "paybill-pool-${var.pool}"
}

resource "azurerm_resource_group" "pool" {
  name     = local.name
  location = var.region
  tags     = local.tags
}

resource "azurerm_virtual_network" "pool" {
  name                = local.name
  location            = azurerm_resource_group.pool.location
  resource_group_name = azurerm_resource_group.pool.name
  address_space       = ["10.100.0.0/16"]
  tags                = local.tags
}

resource "azurerm_subnet" "compute" {
  name                 = "compute"
  resource_group_name  = azurerm_resource_group.pool.name
  virtual_network_name = azurerm_virtual_network.pool.name
  address_prefixes     = ["10.100.1.0/24"]
}

resource "azurerm_subnet" "database" {
  name                 = "database"
  resource_group_name  = azurerm_resource_group.pool.name
  virtual_network_name = azurerm_virtual_network.pool.name
  address_prefixes     = ["10.100.2.0/24"]
  delegation {
    name = "postgresql"
    service_delegation {
      name    = "Microsoft.DBforPostgreSQL/flexibleServers"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

resource "azurerm_network_security_group" "database" {
  name                = "${local.name}-database"
  location            = azurerm_resource_group.pool.location
  resource_group_name = azurerm_resource_group.pool.name
  security_rule {
    name                       = "postgresql-from-the-network"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "5432"
    source_address_prefix      = "VirtualNetwork"
    destination_address_prefix = "*"
  }
  tags = local.tags
}

resource "azurerm_subnet_network_security_group_association" "database" {
  subnet_id                 = azurerm_subnet.database.id
  network_security_group_id = azurerm_network_security_group.database.id
}

resource "azurerm_private_dns_zone" "pool" {
  name                = "${local.name}.private.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.pool.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "pool" {
  name                  = local.name
  private_dns_zone_name = azurerm_private_dns_zone.pool.name
  resource_group_name   = azurerm_resource_group.pool.name
  virtual_network_id    = azurerm_virtual_network.pool.id
  tags                  = local.tags
}

resource "terraform_data" "password" {
  input = sensitive("Pb-${replace(uuid(), "-", "")}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "terraform_data" "compute_password" {
  input = sensitive("Pb-${replace(uuid(), "-", "")}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "azurerm_postgresql_flexible_server" "pool" {
  name                          = local.name
  location                      = azurerm_resource_group.pool.location
  resource_group_name           = azurerm_resource_group.pool.name
  version                       = "15"
  sku_name                      = "GP_Standard_D2ds_v5"
  storage_mb                    = lookup(var.sizes, "storage_gib", 128) > 128 ? 524288 : 131072
  delegated_subnet_id           = azurerm_subnet.database.id
  private_dns_zone_id           = azurerm_private_dns_zone.pool.id
  public_network_access_enabled = false
  administrator_login           = "paybill"
  administrator_password        = terraform_data.password.output
  tags                          = local.tags
  depends_on                    = [azurerm_private_dns_zone_virtual_network_link.pool]
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

resource "azurerm_postgresql_flexible_server_database" "pool" {
  name      = replace(local.name, "-", "_")
  server_id = azurerm_postgresql_flexible_server.pool.id
  charset   = "UTF8"
  collation = "en_US.utf8"
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

resource "azurerm_storage_account" "pool" {
  name                            = "pp${substr(sha1(var.pool), 0, 22)}"
  location                        = azurerm_resource_group.pool.location
  resource_group_name             = azurerm_resource_group.pool.name
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  allow_nested_items_to_be_public = false
  tags                            = local.tags
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

resource "azurerm_network_interface" "compute" {
  name                = "${local.name}-compute"
  location            = azurerm_resource_group.pool.location
  resource_group_name = azurerm_resource_group.pool.name
  ip_configuration {
    name                          = "internal"
    subnet_id                     = azurerm_subnet.compute.id
    private_ip_address_allocation = "Dynamic"
  }
  tags = local.tags
}

resource "azurerm_linux_virtual_machine" "compute" {
  name                            = "${local.name}-compute"
  location                        = azurerm_resource_group.pool.location
  resource_group_name             = azurerm_resource_group.pool.name
  size                            = "Standard_B2s"
  admin_username                  = "paybill"
  admin_password                  = terraform_data.compute_password.output
  disable_password_authentication = false
  network_interface_ids           = [azurerm_network_interface.compute.id]
  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Standard_LRS"
  }
  source_image_reference {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-server-jammy"
    sku       = "22_04-lts-gen2"
    version   = "latest"
  }
  tags = local.tags
}

output "network_id" {
  value = azurerm_virtual_network.pool.id
}

output "database_host" {
  value = azurerm_postgresql_flexible_server.pool.fqdn
}

output "storage_account" {
  value = azurerm_storage_account.pool.name
}
