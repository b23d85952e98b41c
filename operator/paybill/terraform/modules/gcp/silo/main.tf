# Silo: everything the tenant uses is its own: a VPC network and subnetwork, a Cloud SQL PostgreSQL instance on a
# private address peered into it, a Compute Engine instance, a bucket and a service account scoped to that bucket.
locals {
  # GCP labels: lowercase keys and values of at most 63 characters from [a-z0-9_-] (the tenant id is a DNS label)
  labels = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = substr(lower(replace(var.plan, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
    "paybill-cost-center" = substr(lower(replace(var.cost_center, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
  }
  name     = "paybill-${var.tenant_id}"
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
  large    = lookup(var.sizes, "instance_units", 1) > 1
}

resource "google_compute_network" "tenant" {
  name                    = local.name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "tenant" {
  name          = local.name
  region        = var.region
  network       = google_compute_network.tenant.id
  ip_cidr_range = "10.0.1.0/24"
}

resource "google_compute_firewall" "internal" {
  name          = "${local.name}-internal"
  network       = google_compute_network.tenant.id
  source_ranges = [google_compute_subnetwork.tenant.ip_cidr_range]
  allow {
    protocol = "tcp"
    ports    = ["5432"]
  }
}

# Private services access: the range Cloud SQL's private address comes from, peered into the tenant's network
resource "google_compute_global_address" "database" {
  name          = "${local.name}-database"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.tenant.id
  labels        = local.labels
}

resource "google_service_networking_connection" "database" {
  network                 = google_compute_network.tenant.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.database.name]
}

# A password made once (uuid() is built in; ignore_changes keeps it from changing on every plan)
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
    tier        = local.large ? "db-custom-2-7680" : "db-f1-micro"
    disk_size   = lookup(var.sizes, "storage_gib", 10)
    user_labels = local.labels
    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.tenant.id
    }
    backup_configuration {
      enabled = var.deletion_policy != "destroy"
    }
    retain_backups_on_delete = var.deletion_policy != "destroy"
  }
  depends_on = [google_service_networking_connection.database]
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

# only deletion_policy destroy deletes the tenant's objects: otherwise destroying a bucket that holds any fails
resource "google_storage_bucket" "tenant" {
  name                        = local.name
  location                    = var.region
  force_destroy               = var.deletion_policy == "destroy"
  uniform_bucket_level_access = true
  labels                      = local.labels
}

resource "google_service_account" "tenant" {
  account_id   = "pb-${substr(sha1(var.tenant_id), 0, 24)}"
  display_name = "Paybill tenant ${var.tenant_id}"
}

resource "google_storage_bucket_iam_member" "tenant" {
  bucket = google_storage_bucket.tenant.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.tenant.email}"
}

data "google_compute_zones" "available" {
  region = var.region
}

resource "google_compute_instance" "compute" {
  name         = "${local.name}-compute"
  zone         = data.google_compute_zones.available.names[0]
  machine_type = local.large ? "e2-medium" : "e2-small"
  boot_disk {
    initialize_params {
      image  = "debian-cloud/debian-12"
      labels = local.labels
    }
  }
  network_interface {
    subnetwork = google_compute_subnetwork.tenant.id
  }
  service_account {
    email  = google_service_account.tenant.email
    scopes = ["cloud-platform"]
  }
  labels = local.labels
}
