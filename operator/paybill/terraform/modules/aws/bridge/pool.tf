# The pool's shared infrastructure (modules/aws/shared), found by name and tag, never created here.
data "aws_vpc" "pool" {
  tags = { "paybill.dev/pool" = var.pool }
}

data "aws_subnet_ids" "pool" {
  vpc_id = data.aws_vpc.pool.id
}

data "aws_db_instance" "pool" {
  db_instance_identifier = "paybill-pool-${var.pool}"
}

data "aws_s3_bucket" "pool" {
  bucket = "paybill-pool-${var.pool}"
}
