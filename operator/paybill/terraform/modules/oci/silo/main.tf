# Silo: everything the tenant uses is its own: a VCN with a compute and a database subnet, an OCI Database with
# PostgreSQL system reachable only inside it, a compute instance and an Object Storage bucket.
locals {
  # OCI freeform tags (keys without dots or spaces)
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  name     = "paybill-${var.tenant_id}"
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
  large    = lookup(var.sizes, "instance_units", 1) > 1
}

resource "oci_core_vcn" "tenant" {
  compartment_id = var.compartment_ocid
  display_name   = local.name
  cidr_blocks    = ["10.0.0.0/16"]
  freeform_tags  = local.tags
}

resource "oci_core_security_list" "database" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.tenant.id
  display_name   = "${local.name}-database"
  ingress_security_rules {
    protocol = "6"
    source   = "10.0.0.0/16"
    tcp_options {
      min = 5432
      max = 5432
    }
  }
  freeform_tags = local.tags
}

resource "oci_core_subnet" "compute" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.tenant.id
  display_name               = "${local.name}-compute"
  cidr_block                 = "10.0.1.0/24"
  prohibit_public_ip_on_vnic = true
  freeform_tags              = local.tags
}

resource "oci_core_subnet" "database" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.tenant.id
  display_name               = "${local.name}-database"
  cidr_block                 = "10.0.2.0/24"
  prohibit_public_ip_on_vnic = true
  security_list_ids          = [oci_core_security_list.database.id]
  freeform_tags              = local.tags
}

# A password made once (uuid() is built in; ignore_changes keeps it from changing on every plan); the prefix gives
# OCI's rules an upper case letter and a symbol.
resource "terraform_data" "password" {
  input = sensitive("Pb-${substr(replace(uuid(), "-", ""), 0, 28)}")
  lifecycle {
    ignore_changes = [input]
  }
}

resource "oci_psql_db_system" "tenant" {
  compartment_id              = var.compartment_ocid
  display_name                = local.name
  db_version                  = "15"
  shape                       = "PostgreSQL.VM.Standard.E5.Flex"
  instance_ocpu_count         = local.large ? 4 : 2
  instance_memory_size_in_gbs = local.large ? 64 : 32
  instance_count              = 1
  network_details {
    subnet_id = oci_core_subnet.database.id
  }
  storage_details {
    is_regionally_durable = true
    system_type           = "OCI_OPTIMIZED_STORAGE"
  }
  credentials {
    username = local.database
    password_details {
      password_type = "PLAIN_TEXT"
      password      = terraform_data.password.output
    }
  }
  freeform_tags = local.tags
}

data "oci_objectstorage_namespace" "tenancy" {
  compartment_id = var.compartment_ocid
}

resource "oci_objectstorage_bucket" "tenant" {
  compartment_id = var.compartment_ocid
  namespace      = data.oci_objectstorage_namespace.tenancy.namespace
  name           = local.name
  access_type    = "NoPublicAccess"
  freeform_tags  = local.tags
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
    ocpus         = local.large ? 2 : 1
    memory_in_gbs = local.large ? 16 : 8
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
