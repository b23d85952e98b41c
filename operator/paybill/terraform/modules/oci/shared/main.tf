# A pool's shared infrastructure, created once: the VCN and its subnets, the shared OCI Database with PostgreSQL
# system, the shared bucket and the shared compute that oci/pooled and oci/bridge tenants find by name.
locals {
  tags = {
    "paybill-pool"        = var.pool
    "paybill-cost-center" = var.cost_center
  }
  name = "paybill-pool-${var.pool}"
}

resource "oci_core_vcn" "pool" {
  compartment_id = var.compartment_ocid
  display_name   = local.name
  cidr_blocks    = ["10.100.0.0/16"]
  freeform_tags  = local.tags
}

resource "oci_core_security_list" "database" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.pool.id
  display_name   = "${local.name}-database"
  ingress_security_rules {
    protocol = "6"
    source   = "10.100.0.0/16"
    tcp_options {
      min = 5432
      max = 5432
    }
  }
  freeform_tags = local.tags
}

resource "oci_core_subnet" "compute" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.pool.id
  display_name               = "${local.name}-compute"
  cidr_block                 = "10.100.1.0/24"
  prohibit_public_ip_on_vnic = true
  freeform_tags              = local.tags
}

resource "oci_core_subnet" "database" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.pool.id
  display_name               = "${local.name}-database"
  cidr_block                 = "10.100.2.0/24"
  prohibit_public_ip_on_vnic = true
  security_list_ids          = [oci_core_security_list.database.id]
  freeform_tags              = local.tags
}

resource "terraform_data" "password" {
  input = sensitive("Pb-${substr(replace(uuid(), "-", ""), 0, 28)}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "oci_psql_db_system" "pool" {
  compartment_id              = var.compartment_ocid
  display_name                = local.name
  db_version                  = "15"
  shape                       = "PostgreSQL.VM.Standard.E5.Flex"
  instance_ocpu_count         = 4
  instance_memory_size_in_gbs = 64
  instance_count              = 1
  network_details {
    subnet_id = oci_core_subnet.database.id
  }
  storage_details {
    is_regionally_durable = true
    system_type           = "OCI_OPTIMIZED_STORAGE"
  }
  credentials {
    username = "paybill"
    password_details {
      password_type = "PLAIN_TEXT"
      password      = terraform_data.password.output
    }
  }
  freeform_tags = local.tags
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

data "oci_objectstorage_namespace" "tenancy" {
  compartment_id = var.compartment_ocid
}

resource "oci_objectstorage_bucket" "pool" {
  compartment_id = var.compartment_ocid
  namespace      = data.oci_objectstorage_namespace.tenancy.namespace
  name           = local.name
  access_type    = "NoPublicAccess"
  freeform_tags  = local.tags
  lifecycle {
    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run
  }
}

data "oci_identity_availability_domains" "here" {
  compartment_id = var.compartment_ocid
}

data "oci_core_images" "linux" {
  compartment_id   = var.compartment_ocid
  operating_system = "Oracle Linux"
  shape            = "VM.Standard.E4.Flex"
  sort_by          = "TIMECREATED"
  sort_order       = "DESC"
}

resource "oci_core_instance" "compute" {
  compartment_id      = var.compartment_ocid
  availability_domain = data.oci_identity_availability_domains.here.availability_domains[0].name
  display_name        = "${local.name}-compute"
  shape               = "VM.Standard.E4.Flex"
  shape_config {
    ocpus         = 2
    memory_in_gbs = 16
  }
  create_vnic_details {
    subnet_id        = oci_core_subnet.compute.id
    assign_public_ip = false
    freeform_tags    = local.tags
  }
  source_details {
    source_type = "image"
    source_id   = data.oci_core_images.linux.images[0].id
  }
  freeform_tags = local.tags
}

output "network_id" {
  value = oci_core_vcn.pool.id
}

output "database_host" {
  value = oci_psql_db_system.pool.network_details[0].primary_db_endpoint_private_ip
}

output "bucket" {
  value = oci_objectstorage_bucket.pool.name
}
