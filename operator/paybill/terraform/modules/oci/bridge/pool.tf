# The pool's shared infrastructure (modules/oci/shared), found by display name in the compartment, never created
# here.
locals {
  pool = "paybill-pool-${var.pool}"
}

data "oci_core_vcns" "pool" {
  compartment_id = var.compartment_ocid
  display_name   = local.pool
}

data "oci_core_subnets" "compute" {
  compartment_id = var.compartment_ocid
  vcn_id         = data.oci_core_vcns.pool.virtual_networks[0].id
  display_name   = "${local.pool}-compute"
}

data "oci_core_subnets" "database" {
  compartment_id = var.compartment_ocid
  vcn_id         = data.oci_core_vcns.pool.virtual_networks[0].id
  display_name   = "${local.pool}-database"
}

data "oci_psql_db_systems" "pool" {
  compartment_id = var.compartment_ocid
  display_name   = local.pool
}

data "oci_psql_db_system" "pool" {
  db_system_id = data.oci_psql_db_systems.pool.db_system_collection[0].items[0].id
}

data "oci_objectstorage_namespace" "tenancy" {
  compartment_id = var.compartment_ocid
}

data "oci_objectstorage_bucket" "pool" {
  namespace = data.oci_objectstorage_namespace.tenancy.namespace
  name      = local.pool
}
