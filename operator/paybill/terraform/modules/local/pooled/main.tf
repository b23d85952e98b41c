# Pooled on built-in resources only: the tenant registers into the pool's shared network and database
# (a prefix and a policy of its own), as records. The same contract as aws/pooled.
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
  }
  pool = "paybill-pool-${var.pool}"
}

resource "terraform_data" "network" {
  input = { name = local.pool, region = var.region, shared = true, tags = local.tags }
}

resource "terraform_data" "subnets" {
  input = { network = terraform_data.network.id, cidrs = ["10.100.1.0/24", "10.100.2.0/24"], tags = local.tags }
}

resource "terraform_data" "database" {
  input = {
    host   = "${local.pool}.${var.region}.paybill.local"
    name   = replace(local.pool, "-", "_")
    user   = "tenant_${replace(var.tenant_id, "-", "_")}"
    prefix = "tenants/${var.tenant_id}/"
    tags   = local.tags
  }
}

resource "terraform_data" "credentials" {
  input = { database = terraform_data.database.id, policy = "allow ${terraform_data.database.output.prefix}*", tags = local.tags }
}
