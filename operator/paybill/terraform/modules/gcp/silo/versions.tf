terraform {
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 7.0"
    }
  }
}

# Credentials and the project come from the environment (GOOGLE_CREDENTIALS or the operator's workload identity,
# GOOGLE_PROJECT), never from the module; the region is var.region.
provider "google" {
  region = var.region
}
