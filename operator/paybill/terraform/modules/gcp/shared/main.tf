# A pool's shared infrastructure, created once: the network (with private services access for Cloud SQL), the
# shared Cloud SQL instance, the shared bucket and the shared compute that gcp/pooled and gcp/bridge tenants find
# by name.
locals {
  # GCP labels: lowercase keys and values of at most 63 characters from [a-z0-9_-]
  labels = {
    "paybill-pool"        = substr(lower(replace(var.pool, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
    "paybill-cost-center" = substr(lower(replace(var.cost_center, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)
  }
  name = "paybill-pool-${var.pool}"
}

resource "google_compute_network" "pool" {
  name                    = local.name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "pool" {
  name          = local.name
  region        = var.region
  network       = google_compute_network.pool.id
  ip_cidr_range = "10.100.1.0/24"
}

resource "google_compute_firewall" "internal" {
  name          = "${local.name}-internal"
  network       = google_compute_network.pool.id
  source_ranges = [google_compute_subnetwork.pool.ip_cidr_range]
  allow {
    protocol = "tcp"
    ports    = ["5432"]
  }
}

resource "google_compute_global_address" "database" {
  name          = "${local.name}-database"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 16
  network       = google_compute_network.pool.id
  labels        = local.labels
}

resource "google_service_networking_connection" "database" {
  network                 = google_compute_network.pool.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.database.name]
}

resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

resource "google_sql_database_instance" "pool" {
  name                = local.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = true
  settings {
    tier        = "db-custom-2-7680"
    disk_size   = lookup(var.sizes, "storage_gib", 100)
    user_labels = local.labels
    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.pool.id
    }
  }
  depends_on = [google_service_networking_connection.database]
}

resource "google_sql_database" "pool" {
  name            = replace(local.name, "-", "_")
  instance        = google_sql_database_instance.pool.name
  deletion_policy = "ABANDON"
}

resource "google_sql_user" "pool" {
  name     = "paybill"
  instance = google_sql_database_instance.pool.name
  password = terraform_data.password.output
}

resource "google_storage_bucket" "pool" {
  name                        = local.name
  location                    = var.region
  force_destroy               = false
  uniform_bucket_level_access = true
  labels                      = local.labels
}

data "google_compute_zones" "available" {
  region = var.region
}

resource "google_compute_instance" "compute" {
  name         = "${local.name}-compute"
  zone         = data.google_compute_zones.available.names[0]
  machine_type = "e2-medium"
  boot_disk {
    initialize_params {
      image  = "debian-cloud/debian-12"
      labels = local.labels
    }
  }
  network_interface {
    subnetwork = google_compute_subnetwork.pool.id
  }
  labels = local.labels
}

output "network_id" {
  value = google_compute_network.pool.id
}

output "database_host" {
  value = google_sql_database_instance.pool.private_ip_address
}

output "bucket" {
  value = google_storage_bucket.pool.name
}
