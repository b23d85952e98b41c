# Bridge on built-in resources only: the pool's shared network and compute, a database per tenant, as
# records. The same contract as aws/bridge.
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
  }
  pool     = "paybill-pool-${var.pool}"
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "terraform_data" "network" {
  input = { name = local.pool, region = var.region, shared = true, tags = local.tags }
}

resource "terraform_data" "subnets" {
  input = { network = terraform_data.network.id, cidrs = ["10.100.1.0/24", "10.100.2.0/24"], tags = local.tags }
}

resource "terraform_data" "database" {
  input = {
    host        = "${local.pool}.${var.region}.paybill.local"
    name        = local.database
    user        = local.database
    storage_gib = lookup(var.sizes, "storage_gib", 10)
    tags        = local.tags
  }
}

resource "terraform_data" "credentials" {
  input = { database = terraform_data.database.id, tags = local.tags }
}
