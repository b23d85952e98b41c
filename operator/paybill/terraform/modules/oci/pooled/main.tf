# Pooled: the tenant only registers into the pool: a prefix of its own in the shared bucket. Its rows live in the
# shared database (RLS).
locals {
  # OCI freeform tags (keys without dots or spaces)
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  prefix = "tenants/${var.tenant_id}/"
  user   = "tenant_${replace(var.tenant_id, "-", "_")}"
}

# The prefix, marked as the tenant's (objects carry metadata, not tags)
resource "oci_objectstorage_object" "prefix" {
  namespace = data.oci_objectstorage_bucket.pool.namespace
  bucket    = data.oci_objectstorage_bucket.pool.name
  object    = local.prefix
  content   = ""
  metadata  = { for key, value in local.tags : "opc-meta-${key}" => value }
}

# The tenant's login in the shared database (the operator creates the role itself)
resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}
