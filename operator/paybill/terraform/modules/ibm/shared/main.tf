# A pool's shared infrastructure, created once: the VPC and its subnets, the shared Databases for PostgreSQL
# deployment, the shared Cloud Object Storage instance and bucket and the shared compute that ibm/pooled and
# ibm/bridge tenants find by name.
locals {
  # IBM user tags: "key:value" strings from [A-Za-z0-9 _.:-] (IBM Cloud lowercases them)
  tags = [
    "paybill-pool:${lower(replace(var.pool, "/[^a-zA-Z0-9_.-]/", "_"))}",
    "paybill-cost-center:${lower(replace(var.cost_center, "/[^a-zA-Z0-9_.-]/", "_"))}",
  ]
  name  = "paybill-pool-${var.pool}"
  image = [for image in data.ibm_is_images.public.images : image.id if startswith(image.os, "ubuntu")][0]
}

data "ibm_resource_group" "default" {
  is_default = true
}

data "ibm_is_zones" "here" {
  region = var.region
}

resource "ibm_is_vpc" "pool" {
  name           = local.name
  resource_group = data.ibm_resource_group.default.id
  tags           = local.tags
}

resource "ibm_is_subnet" "compute" {
  name                     = "${local.name}-compute"
  vpc                      = ibm_is_vpc.pool.id
  zone                     = data.ibm_is_zones.here.zones[0]
  total_ipv4_address_count = 256
  resource_group           = data.ibm_resource_group.default.id
  tags                     = local.tags
}

resource "ibm_is_subnet" "database" {
  name                     = "${local.name}-database"
  vpc                      = ibm_is_vpc.pool.id
  zone                     = data.ibm_is_zones.here.zones[0]
  total_ipv4_address_count = 256
  resource_group           = data.ibm_resource_group.default.id
  tags                     = local.tags
}

resource "terraform_data" "password" {
  input = sensitive("Pb${substr(replace(uuid(), "-", ""), 0, 28)}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "ibm_database" "pool" {
  name              = local.name
  service           = "databases-for-postgresql"
  plan              = "standard"
  version           = "15"
  location          = var.region
  resource_group_id = data.ibm_resource_group.default.id
  adminpassword     = terraform_data.password.output
  service_endpoints = "private"
  group {
    group_id = "member"
    disk {
      allocation_mb = max(20480, lookup(var.sizes, "storage_gib", 20) * 1024)
    }
  }
  tags = local.tags
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

resource "ibm_resource_instance" "storage" {
  name              = local.name
  service           = "cloud-object-storage"
  plan              = "standard"
  location          = "global"
  resource_group_id = data.ibm_resource_group.default.id
  tags              = local.tags
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

resource "ibm_cos_bucket" "pool" {
  bucket_name          = local.name
  resource_instance_id = ibm_resource_instance.storage.id
  region_location      = var.region
  storage_class        = "standard"
  force_delete         = false
}

data "ibm_is_images" "public" {
  visibility = "public"
  status     = "available"
}

resource "ibm_is_instance" "compute" {
  name           = "${local.name}-compute"
  image          = local.image
  profile        = "cx2-4x8"
  vpc            = ibm_is_vpc.pool.id
  zone           = data.ibm_is_zones.here.zones[0]
  resource_group = data.ibm_resource_group.default.id
  primary_network_interface {
    subnet = ibm_is_subnet.compute.id
  }
  tags = local.tags
}

output "network_id" {
  value = ibm_is_vpc.pool.id
}

output "database_id" {
  value = ibm_database.pool.id
}

output "bucket" {
  value = ibm_cos_bucket.pool.bucket_name
}
