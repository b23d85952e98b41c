# The pool's inputs: created once per pool, then pooled and bridge tenants register into it.
variable "pool" {
  type        = string
  description = "The pool's name"
}

variable "region" {
  type = string
}

variable "cost_center" {
  type = string
}

variable "sizes" {
  type    = map(number)
  default = {}
}

# OCI needs a compartment for every resource and Terraform cannot read the provider's tenancy: the compartment
# comes with the credentials (TF_VAR_compartment_ocid in the Plan's credentials Secret), never from the module.
variable "compartment_ocid" {
  type        = string
  description = "The OCI compartment the tenant's resources go in"
}
