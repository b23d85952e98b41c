# A pool's shared infrastructure, created once: the network, the shared PostgreSQL instance and the shared
# bucket that aws/pooled and aws/bridge tenants find by name and tag.
locals {
  tags = {
    "paybill.dev/pool"        = var.pool
    "paybill.dev/cost-center" = var.cost_center
  }
  name = "paybill-pool-${var.pool}"
}

resource "aws_vpc" "pool" {
  cidr_block = "10.100.0.0/16"
  tags       = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "pool" {
  count             = 2
  vpc_id            = aws_vpc.pool.id
  cidr_block        = cidrsubnet(aws_vpc.pool.cidr_block, 8, count.index + 1)
  availability_zone = "${var.region}${["a", "b"][count.index]}"
  tags              = merge(local.tags, { Name = "${local.name}-${count.index}" })
}

resource "aws_security_group" "database" {
  name        = "${local.name}-database"
  description = "PostgreSQL from inside the pool's VPC only"
  vpc_id      = aws_vpc.pool.id
  ingress {
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [aws_vpc.pool.cidr_block]
  }
  tags = local.tags
}

resource "aws_db_subnet_group" "pool" {
  name       = local.name
  subnet_ids = aws_subnet.pool[*].id
  tags       = local.tags
}

resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

resource "aws_db_instance" "pool" {
  identifier                = local.name
  engine                    = "postgres"
  engine_version            = "15.4"
  instance_class            = "db.t3.medium"
  allocated_storage         = lookup(var.sizes, "storage_gib", 100)
  name                      = replace(local.name, "-", "_")
  username                  = "paybill"
  password                  = terraform_data.password.output
  db_subnet_group_name      = aws_db_subnet_group.pool.name
  vpc_security_group_ids    = [aws_security_group.database.id]
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.name}-final"
  tags                      = local.tags
}

resource "aws_s3_bucket" "pool" {
  bucket        = local.name
  acl           = "private"
  force_destroy = false
  tags          = local.tags
}

output "network_id" {
  value = aws_vpc.pool.id
}

output "database_host" {
  value = aws_db_instance.pool.address
}

output "bucket" {
  value = aws_s3_bucket.pool.bucket
}
