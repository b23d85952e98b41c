# Pooled: the tenant only registers into the pool: a container of its own in the shared storage account, and a
# managed identity whose role reaches that container and nothing else. Its rows live in the shared database (RLS).
locals {
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  name      = "paybill-${var.tenant_id}-pooled" # distinct from the other models\' names: a change of model builds this beside them
  container = "tenant-${var.tenant_id}"
  user      = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "azurerm_storage_container" "tenant" {
  name                  = local.container
  storage_account_id    = data.azurerm_storage_account.pool.id
  container_access_type = "private"
}

resource "azurerm_user_assigned_identity" "tenant" {
  name                = local.name
  location            = data.azurerm_resource_group.pool.location
  resource_group_name = data.azurerm_resource_group.pool.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "container" {
  scope                = azurerm_storage_container.tenant.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.tenant.principal_id
}

# The tenant's login in the shared database (the operator creates the role itself)
resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}
