# Bridge: the pool's network and compute are shared; the database is the tenant's own instance, in the
# pool's subnets, with an IAM role of its own.
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
    "paybill.dev/managed-by"  = "paybill"
  }
  name     = "paybill-${var.tenant_id}-bridge" # distinct from the other models\' names: a change of model builds this beside them
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "aws_security_group" "database" {
  name        = "${local.name}-database"
  description = "The tenant's PostgreSQL, from inside the pool's VPC only"
  vpc_id      = data.aws_vpc.pool.id
  ingress {
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.pool.cidr_block]
  }
  tags = local.tags
}

resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

# Made once for the life of the tenant's infrastructure: a final snapshot's name never collides with one kept from
# an earlier life of a tenant of the same name
resource "terraform_data" "generation" {
  input = substr(replace(uuid(), "-", ""), 0, 8)
  lifecycle {
    ignore_changes = [input]
  }
}

# deletion_policy snapshot (and retain): destroying the instance leaves a final snapshot of it
resource "aws_db_instance" "tenant" {
  identifier                = local.name
  engine                    = "postgres"
  engine_version            = "15.4"
  instance_class            = "db.t3.micro"
  allocated_storage         = lookup(var.sizes, "storage_gib", 20)
  name                      = local.database
  username                  = local.database
  password                  = terraform_data.password.output
  db_subnet_group_name      = "paybill-pool-${var.pool}"
  vpc_security_group_ids    = [aws_security_group.database.id]
  skip_final_snapshot       = var.deletion_policy == "destroy"
  final_snapshot_identifier = "${local.name}-final-${terraform_data.generation.output}"
  tags                      = local.tags
}

resource "aws_iam_role" "tenant" {
  name = local.name
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ec2.amazonaws.com" } }]
  })
  tags = local.tags
}
