# Bridge: the pool's network and compute are shared; the database is the tenant's own Databases for PostgreSQL
# deployment, on private endpoints only.
locals {
  # IBM user tags: "key:value" strings from [A-Za-z0-9 _.:-] (IBM Cloud lowercases them), at most 128 characters
  tags = [
    "paybill-tenant:${var.tenant_id}",
    "paybill-plan:${lower(replace(var.plan, "/[^a-zA-Z0-9_.-]/", "_"))}",
    "paybill-cost-center:${lower(replace(var.cost_center, "/[^a-zA-Z0-9_.-]/", "_"))}",
  ]
  name = "paybill-${var.tenant_id}-bridge" # distinct from the other models\' names: a change of model builds this beside them
}

resource "terraform_data" "password" {
  input = sensitive("Pb${substr(replace(uuid(), "-", ""), 0, 28)}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "ibm_database" "tenant" {
  name              = local.name
  service           = "databases-for-postgresql"
  plan              = "standard"
  version           = "15"
  location          = var.region
  resource_group_id = data.ibm_resource_group.default.id
  adminpassword     = terraform_data.password.output
  service_endpoints = "private"
  group {
    group_id = "member"
    disk {
      allocation_mb = max(5120, lookup(var.sizes, "storage_gib", 5) * 1024)
    }
  }
  tags = local.tags
}

data "ibm_database_connection" "tenant" {
  deployment_id = ibm_database.tenant.id
  user_id       = "admin"
  user_type     = "database"
  endpoint_type = "private"
}
