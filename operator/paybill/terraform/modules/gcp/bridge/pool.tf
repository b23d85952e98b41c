# The pool's shared infrastructure (modules/gcp/shared), found by name, never created here.
data "google_compute_network" "pool" {
  name = "paybill-pool-${var.pool}"
}

data "google_compute_subnetwork" "pool" {
  name   = "paybill-pool-${var.pool}"
  region = var.region
}

data "google_sql_database_instance" "pool" {
  name = "paybill-pool-${var.pool}"
}

data "google_storage_bucket" "pool" {
  name = "paybill-pool-${var.pool}"
}
