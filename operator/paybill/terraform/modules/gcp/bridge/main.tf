# Bridge: the pool's network and compute are shared; the database is the tenant's own Cloud SQL instance, on a
# private address in the pool's network (whose private services access the pool set up).
locals {
  # GCP labels: lowercase keys and values of at most 63 characters from [a-z0-9_-] (the tenant id is a DNS label)
  labels = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = substr(lower(replace(var.plan, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
    "paybill-cost-center" = substr(lower(replace(var.cost_center, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
  }
  name     = "paybill-${var.tenant_id}-bridge" # distinct from the other models\' names: a change of model builds this beside them
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

# deletion_policy retain: Terraform refuses to delete the instance. snapshot: its daily backups outlive it, but the
# provider (6.x) takes no final backup, so the runner's destroy refuses to delete it (keeping.py) until the policy is
# destroy
resource "google_sql_database_instance" "tenant" {
  name                = local.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_policy == "retain"
  settings {
    tier        = "db-f1-micro"
    disk_size   = lookup(var.sizes, "storage_gib", 10)
    user_labels = local.labels
    ip_configuration {
      ipv4_enabled    = false
      private_network = data.google_compute_network.pool.id
    }
    backup_configuration {
      enabled = var.deletion_policy != "destroy"
    }
    retain_backups_on_delete = var.deletion_policy != "destroy"
  }
}

# dropped only under deletion_policy destroy: otherwise it stays in the instance (and in whatever backup is kept)
resource "google_sql_database" "tenant" {
  name            = local.database
  instance        = google_sql_database_instance.tenant.name
  deletion_policy = var.deletion_policy == "destroy" ? "DELETE" : "ABANDON"
}

resource "google_sql_user" "tenant" {
  name     = local.database
  instance = google_sql_database_instance.tenant.name
  password = terraform_data.password.output
}
