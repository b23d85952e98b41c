# The input contract every Paybill module takes (operator/paybill/terraform/contract.py checks it).
variable "tenant_id" {
  type        = string
  description = "The Tenant's name (a DNS label)"
}

variable "plan" {
  type        = string
  description = "The Plan the tenant subscribes to"
}

variable "region" {
  type        = string
  description = "Where the tenant's infrastructure lives"
}

variable "cost_center" {
  type        = string
  description = "Tagged on every resource, for the bill"
}

variable "sizes" {
  type        = map(number)
  default     = {}
  description = "From the plan's quotas: storage_gib, connections, instance_units"
}

variable "pool" {
  type        = string
  default     = "default"
  description = "The shared pool a pooled or bridge tenant registers into"
}

variable "deletion_policy" {
  type        = string
  default     = "snapshot"
  description = "What a destroy does to the tenant's data (its Tenant's deletionPolicy): destroy, snapshot or retain"
  validation {
    condition     = contains(["destroy", "snapshot", "retain"], var.deletion_policy)
    error_message = "deletion_policy is destroy, snapshot or retain."
  }
}

# OCI needs a compartment for every resource and Terraform cannot read the provider's tenancy: the compartment
# comes with the credentials (TF_VAR_compartment_ocid in the Plan's credentials Secret), never from the module.
variable "compartment_ocid" {
  type        = string
  description = "The OCI compartment the tenant's resources go in"
}
