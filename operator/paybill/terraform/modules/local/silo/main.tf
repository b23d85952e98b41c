# Silo on built-in resources only: a network, subnets and a database of its own, as records. For the demo and
# tests (no provider to install); the same contract as aws/silo.
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
  }
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "terraform_data" "network" {
  input = { name = "paybill-${var.tenant_id}", region = var.region, cidr = "10.0.0.0/16", tags = local.tags }
}

resource "terraform_data" "subnets" {
  input = { network = terraform_data.network.id, cidrs = ["10.0.1.0/24", "10.0.2.0/24"], tags = local.tags }
}

resource "terraform_data" "database" {
  input = {
    host        = "db-${var.tenant_id}.${var.region}.paybill.local"
    name        = local.database
    user        = local.database
    storage_gib = lookup(var.sizes, "storage_gib", 10)
    subnets     = terraform_data.subnets.id
    tags        = local.tags
  }
}

resource "terraform_data" "credentials" {
  input = { database = terraform_data.database.id, tags = local.tags }
}
