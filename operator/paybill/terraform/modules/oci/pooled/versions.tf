terraform {
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.19, < 8.0"
    }
  }
}

# Credentials come from the environment (OCI_TENANCY_OCID, OCI_USER_OCID, OCI_FINGERPRINT, OCI_PRIVATE_KEY, or the
# operator's instance/workload principal), never from the module; the region is var.region.
provider "oci" {
  region = var.region
}
