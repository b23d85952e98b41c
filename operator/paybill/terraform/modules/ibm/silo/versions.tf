terraform {
  required_providers {
    ibm = {
      source  = "IBM-Cloud/ibm"
      version = ">= 1.60, < 2.0"
    }
  }
}

# Credentials come from the environment (IC_API_KEY, or the operator's trusted profile), never from the module;
# the region is var.region.
provider "ibm" {
  region = var.region
}
