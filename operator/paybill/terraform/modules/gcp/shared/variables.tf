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
