# Pooled: the tenant only registers into the pool: a prefix of its own in the shared bucket, and a service account
# whose (conditional) role reaches that prefix and nothing else. Its rows live in the shared database (RLS).
locals {
  # GCP labels: lowercase keys and values of at most 63 characters from [a-z0-9_-] (the tenant id is a DNS label)
  labels = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = substr(lower(replace(var.plan, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
    "paybill-cost-center" = substr(lower(replace(var.cost_center, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
  }
  prefix = "tenants/${var.tenant_id}/"
  user   = "tenant_${replace(var.tenant_id, "-", "_")}"
}

# The prefix, marked as the tenant's (objects carry metadata, not labels)
resource "google_storage_bucket_object" "prefix" {
  bucket   = data.google_storage_bucket.pool.name
  name     = local.prefix
  content  = " "
  metadata = local.labels
}

resource "google_service_account" "tenant" {
  account_id   = "pb-${substr(sha1("${var.tenant_id}/pooled"), 0, 24)}"
  display_name = "Paybill tenant ${var.tenant_id} (pooled)"
}

resource "google_storage_bucket_iam_member" "tenant" {
  bucket = data.google_storage_bucket.pool.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.tenant.email}"
  condition {
    title      = "tenant-prefix"
    expression = "resource.name.startsWith(\"projects/_/buckets/${data.google_storage_bucket.pool.name}/objects/${local.prefix}\")"
  }
}

# The tenant's login in the shared database (the operator creates the role itself)
resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}
