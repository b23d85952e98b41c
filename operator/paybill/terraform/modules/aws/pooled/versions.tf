terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 3.39, < 4.0"
    }
  }
}

# Endpoints, credentials and validation switches come from the environment or an override file the
# runner adds (RunnerConfig.extra_files), never from the module.
provider "aws" {
  region = var.region
}
