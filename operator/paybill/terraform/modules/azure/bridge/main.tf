# Bridge: the pool's network and compute are shared; the database is the tenant's own flexible server, in the
# pool's delegated subnet and private DNS zone, in a resource group of its own.
locals {
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  name     = "paybill-${var.tenant_id}-bridge" # distinct from the other models\' names: a change of model builds this beside them
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "azurerm_resource_group" "tenant" {
  name     = local.name
  location = var.region
  tags     = local.tags
}

resource "terraform_data" "password" {
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
  sku_name                      = "B_Standard_B1ms"
  storage_mb                    = lookup(var.sizes, "storage_gib", 32) > 32 ? 131072 : 32768
  delegated_subnet_id           = data.azurerm_subnet.database.id
  private_dns_zone_id           = data.azurerm_private_dns_zone.pool.id
  public_network_access_enabled = false
  administrator_login           = local.database
  administrator_password        = terraform_data.password.output
  tags                          = local.tags
}

resource "azurerm_postgresql_flexible_server_database" "tenant" {
  name      = local.database
  server_id = azurerm_postgresql_flexible_server.tenant.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}
