# Bridge: the pool's network and compute are shared; the database is the tenant's own OCI Database with
# PostgreSQL system, in the pool's database subnet.
locals {
  # OCI freeform tags (keys without dots or spaces)
  tags = {
    "paybill-tenant"      = var.tenant_id
    "paybill-plan"        = var.plan
    "paybill-cost-center" = var.cost_center
  }
  name     = "paybill-${var.tenant_id}-bridge" # distinct from the other models\' names: a change of model builds this beside them
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

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
  instance_ocpu_count         = 2
  instance_memory_size_in_gbs = 32
  instance_count              = 1
  network_details {
    subnet_id = data.oci_core_subnets.database.subnets[0].id
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
