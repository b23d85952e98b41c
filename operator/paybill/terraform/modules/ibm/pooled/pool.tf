# The pool's shared infrastructure (modules/ibm/shared), found by name, never created here.
locals {
  pool = "paybill-pool-${var.pool}"
}

data "ibm_resource_group" "default" {
  is_default = true
}

data "ibm_is_vpc" "pool" {
  name = local.pool
}

data "ibm_is_subnet" "compute" {
  name = "${local.pool}-compute"
}

data "ibm_is_subnet" "database" {
  name = "${local.pool}-database"
}

data "ibm_database" "pool" {
  name              = local.pool
  location          = var.region
  resource_group_id = data.ibm_resource_group.default.id
}

data "ibm_resource_instance" "storage" {
  name              = local.pool
  service           = "cloud-object-storage"
  resource_group_id = data.ibm_resource_group.default.id
}

data "ibm_cos_bucket" "pool" {
  bucket_name          = local.pool
  resource_instance_id = data.ibm_resource_instance.storage.id
  bucket_type          = "region_location"
  bucket_region        = var.region
}
