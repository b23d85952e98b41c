# Pooled: the tenant only registers into the pool: a prefix of its own in the shared bucket, and a service ID with
# Writer on that bucket (IBM COS policies are scoped to a bucket here, not to the prefix: unlike aws and gcp, the
# prefix is the tenant's by convention). Its rows live in the shared database (RLS).
locals {
  # IBM user tags: "key:value" strings from [A-Za-z0-9 _.:-] (IBM Cloud lowercases them), at most 128 characters
  tags = [
    "paybill-tenant:${var.tenant_id}",
    "paybill-plan:${lower(replace(var.plan, "/[^a-zA-Z0-9_.-]/", "_"))}",
    "paybill-cost-center:${lower(replace(var.cost_center, "/[^a-zA-Z0-9_.-]/", "_"))}",
  ]
  name   = "paybill-${var.tenant_id}-pooled" # distinct from the other models\' names: a change of model builds this beside them
  prefix = "tenants/${var.tenant_id}/"
  user   = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "ibm_cos_bucket_object" "prefix" {
  bucket_crn      = data.ibm_cos_bucket.pool.crn
  bucket_location = var.region
  key             = local.prefix
  content         = ""
}

resource "ibm_iam_service_id" "tenant" {
  name = local.name
  tags = local.tags
}

resource "ibm_iam_service_policy" "prefix" {
  iam_service_id = ibm_iam_service_id.tenant.id
  roles          = ["Writer"]
  resources {
    service              = "cloud-object-storage"
    resource_instance_id = data.ibm_resource_instance.storage.guid
    resource_type        = "bucket"
    resource             = data.ibm_cos_bucket.pool.bucket_name
  }
  tags = local.tags
}

# The tenant's login in the shared database (the operator creates the role itself)
resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

data "ibm_database_connection" "pool" {
  deployment_id = data.ibm_database.pool.id
  user_id       = "admin"
  user_type     = "database"
  endpoint_type = "private"
}
