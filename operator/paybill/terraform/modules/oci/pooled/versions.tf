terraform {
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.19, < 8.0"
    }
  }
}

# Credentials come from the environment (TF_VAR_tenancy_ocid, TF_VAR_user_ocid, TF_VAR_fingerprint,
# TF_VAR_private_key, or the operator's instance/workload principal), never from the module; the region is
# var.region.
provider "oci" {
  region = var.region
}
