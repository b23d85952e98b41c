# Silo: everything the tenant uses is its own: a VPC with a compute and a database subnet, a Databases for
# PostgreSQL deployment on private endpoints only, a VPC instance, a Cloud Object Storage instance and bucket, and a
# service ID whose policy reaches that bucket and nothing else.
locals {
  # IBM user tags: "key:value" strings from [A-Za-z0-9 _.:-] (IBM Cloud lowercases them), at most 128 characters
  tags = [
    "paybill-tenant:${var.tenant_id}",
    "paybill-plan:${lower(replace(var.plan, "/[^a-zA-Z0-9_.-]/", "_"))}",
    "paybill-cost-center:${lower(replace(var.cost_center, "/[^a-zA-Z0-9_.-]/", "_"))}",
  ]
  name  = "paybill-${var.tenant_id}"
  large = lookup(var.sizes, "instance_units", 1) > 1
  image = [for image in data.ibm_is_images.public.images : image.id if startswith(image.os, "ubuntu")][0]
}

data "ibm_resource_group" "default" {
  is_default = true
}

data "ibm_is_zones" "here" {
  region = var.region
}

resource "ibm_is_vpc" "tenant" {
  name           = local.name
  resource_group = data.ibm_resource_group.default.id
  tags           = local.tags
}

resource "ibm_is_subnet" "compute" {
  name                     = "${local.name}-compute"
  vpc                      = ibm_is_vpc.tenant.id
  zone                     = data.ibm_is_zones.here.zones[0]
  total_ipv4_address_count = 256
  resource_group           = data.ibm_resource_group.default.id
  tags                     = local.tags
}

resource "ibm_is_subnet" "database" {
  name                     = "${local.name}-database"
  vpc                      = ibm_is_vpc.tenant.id
  zone                     = data.ibm_is_zones.here.zones[0]
  total_ipv4_address_count = 256
  resource_group           = data.ibm_resource_group.default.id
  tags                     = local.tags
}

# A password made once (uuid() is built in; ignore_changes keeps it from changing on every plan); letters and
# digits only, 30 characters, within Databases for PostgreSQL's 15 to 32.
resource "terraform_data" "password" {
  input = sensitive("Pb${substr(replace(uuid(), "-", ""), 0, 28)}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "ibm_database" "tenant" {
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
      allocation_mb = max(5120, lookup(var.sizes, "storage_gib", 5) * 1024)
    }
  }
  tags = local.tags
}

data "ibm_database_connection" "tenant" {
  deployment_id = ibm_database.tenant.id
  user_id       = "admin"
  user_type     = "database"
  endpoint_type = "private"
}

resource "ibm_resource_instance" "storage" {
  name              = local.name
  service           = "cloud-object-storage"
  plan              = "standard"
  location          = "global"
  resource_group_id = data.ibm_resource_group.default.id
  tags              = local.tags
}

resource "ibm_cos_bucket" "tenant" {
  bucket_name          = local.name
  resource_instance_id = ibm_resource_instance.storage.id
  region_location      = var.region
  storage_class        = "standard"
  # the provider's default (true) empties the bucket first: only deletion_policy destroy deletes the tenant's objects
  force_delete = var.deletion_policy == "destroy"
}

resource "ibm_iam_service_id" "tenant" {
  name = local.name
  tags = local.tags
}

resource "ibm_iam_service_policy" "bucket" {
  iam_service_id = ibm_iam_service_id.tenant.id
  roles          = ["Writer"]
  resources {
    service              = "cloud-object-storage"
    resource_instance_id = ibm_resource_instance.storage.guid
    resource_type        = "bucket"
    resource             = ibm_cos_bucket.tenant.bucket_name
  }
  tags = local.tags
}

data "ibm_is_images" "public" {
  visibility = "public"
  status     = "available"
}

resource "ibm_is_instance" "compute" {
  name           = "${local.name}-compute"
  image          = local.image
  profile        = local.large ? "cx2-4x8" : "cx2-2x4"
  vpc            = ibm_is_vpc.tenant.id
  zone           = data.ibm_is_zones.here.zones[0]
  resource_group = data.ibm_resource_group.default.id
  primary_network_interface {
    subnet = ibm_is_subnet.compute.id
  }
  tags = local.tags
}
