# Silo: everything the tenant uses is its own: a resource group, a virtual network with a compute and a database
# subnet, a PostgreSQL flexible server reachable only inside it, a VM, a storage account and a managed identity
# scoped to its container.
locals {
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  name     = "paybill-${var.tenant_id}"
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
  large    = lookup(var.sizes, "instance_units", 1) > 1
}

resource "azurerm_resource_group" "tenant" {
  name     = local.name
  location = var.region
  tags     = local.tags
}

resource "azurerm_virtual_network" "tenant" {
  name                = local.name
  location            = azurerm_resource_group.tenant.location
  resource_group_name = azurerm_resource_group.tenant.name
  address_space       = ["10.0.0.0/16"]
  tags                = local.tags
}

resource "azurerm_subnet" "compute" {
  name                 = "compute"
  resource_group_name  = azurerm_resource_group.tenant.name
  virtual_network_name = azurerm_virtual_network.tenant.name
  address_prefixes     = ["10.0.1.0/24"]
}

resource "azurerm_subnet" "database" {
  name                 = "database"
  resource_group_name  = azurerm_resource_group.tenant.name
  virtual_network_name = azurerm_virtual_network.tenant.name
  address_prefixes     = ["10.0.2.0/24"]
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
  location            = azurerm_resource_group.tenant.location
  resource_group_name = azurerm_resource_group.tenant.name
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

resource "azurerm_private_dns_zone" "database" {
  name                = "${local.name}.private.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.tenant.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "database" {
  name                  = local.name
  private_dns_zone_name = azurerm_private_dns_zone.database.name
  resource_group_name   = azurerm_resource_group.tenant.name
  virtual_network_id    = azurerm_virtual_network.tenant.id
  tags                  = local.tags
}

# Passwords made once (uuid() is built in; ignore_changes keeps them from changing on every plan); the prefix
# gives Azure's complexity rules an upper case letter and a symbol.
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

resource "azurerm_postgresql_flexible_server" "tenant" {
  name                          = local.name
  location                      = azurerm_resource_group.tenant.location
  resource_group_name           = azurerm_resource_group.tenant.name
  version                       = "15"
  sku_name                      = local.large ? "GP_Standard_D2ds_v5" : "B_Standard_B1ms"
  storage_mb                    = lookup(var.sizes, "storage_gib", 32) > 32 ? 131072 : 32768
  delegated_subnet_id           = azurerm_subnet.database.id
  private_dns_zone_id           = azurerm_private_dns_zone.database.id
  public_network_access_enabled = false
  administrator_login           = local.database
  administrator_password        = terraform_data.password.output
  tags                          = local.tags
  depends_on                    = [azurerm_private_dns_zone_virtual_network_link.database]
}

resource "azurerm_postgresql_flexible_server_database" "tenant" {
  name      = local.database
  server_id = azurerm_postgresql_flexible_server.tenant.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_storage_account" "tenant" {
  name                            = "pb${substr(sha1(var.tenant_id), 0, 22)}"
  location                        = azurerm_resource_group.tenant.location
  resource_group_name             = azurerm_resource_group.tenant.name
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  allow_nested_items_to_be_public = false
  tags                            = local.tags
}

resource "azurerm_storage_container" "tenant" {
  name                  = "tenant"
  storage_account_id    = azurerm_storage_account.tenant.id
  container_access_type = "private"
}

resource "azurerm_user_assigned_identity" "tenant" {
  name                = local.name
  location            = azurerm_resource_group.tenant.location
  resource_group_name = azurerm_resource_group.tenant.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "container" {
  scope                = azurerm_storage_container.tenant.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.tenant.principal_id
}

resource "azurerm_network_interface" "compute" {
  name                = "${local.name}-compute"
  location            = azurerm_resource_group.tenant.location
  resource_group_name = azurerm_resource_group.tenant.name
  ip_configuration {
    name                          = "internal"
    subnet_id                     = azurerm_subnet.compute.id
    private_ip_address_allocation = "Dynamic"
  }
  tags = local.tags
}

resource "azurerm_linux_virtual_machine" "compute" {
  name                            = "${local.name}-compute"
  location                        = azurerm_resource_group.tenant.location
  resource_group_name             = azurerm_resource_group.tenant.name
  size                            = local.large ? "Standard_B2s" : "Standard_B1s"
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
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.tenant.id]
  }
  tags = local.tags
}
