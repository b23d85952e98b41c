# Silo: everything the tenant uses is its own: a VPC with two subnets, a security group, a PostgreSQL
# instance, an S3 bucket and an IAM role scoped to that bucket.
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
    "paybill.dev/managed-by"  = "paybill"
  }
  name     = "paybill-${var.tenant_id}"
  database = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "aws_vpc" "tenant" {
  cidr_block           = "10.0.0.0/16"
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "tenant" {
  count             = 2
  vpc_id            = aws_vpc.tenant.id
  cidr_block        = cidrsubnet(aws_vpc.tenant.cidr_block, 8, count.index + 1)
  availability_zone = "${var.region}${["a", "b"][count.index]}"
  tags              = merge(local.tags, { Name = "${local.name}-${count.index}" })
}

resource "aws_security_group" "database" {
  name        = "${local.name}-database"
  description = "PostgreSQL from inside the tenant's VPC only"
  vpc_id      = aws_vpc.tenant.id
  ingress {
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [aws_vpc.tenant.cidr_block]
  }
  tags = local.tags
}

resource "aws_db_subnet_group" "tenant" {
  name       = local.name
  subnet_ids = aws_subnet.tenant[*].id
  tags       = local.tags
}

# A password made once (uuid() is built in; ignore_changes keeps it from changing on every plan)
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
  instance_class            = lookup(var.sizes, "instance_units", 1) > 1 ? "db.t3.small" : "db.t3.micro"
  allocated_storage         = lookup(var.sizes, "storage_gib", 20)
  name                      = local.database
  username                  = local.database
  password                  = terraform_data.password.output
  db_subnet_group_name      = aws_db_subnet_group.tenant.name
  vpc_security_group_ids    = [aws_security_group.database.id]
  skip_final_snapshot       = var.deletion_policy == "destroy"
  final_snapshot_identifier = "${local.name}-silo-final-${terraform_data.generation.output}"
  tags                      = local.tags
}

# only deletion_policy destroy deletes the tenant's objects: otherwise a destroy of a bucket that holds any
# fails (BucketNotEmpty) and the offboarding says why, the objects untouched
resource "aws_s3_bucket" "tenant" {
  bucket        = local.name
  acl           = "private"
  force_destroy = var.deletion_policy == "destroy"
  tags          = local.tags
}

resource "aws_iam_role" "tenant" {
  name = local.name
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ec2.amazonaws.com" } }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "bucket" {
  name = "bucket"
  role = aws_iam_role.tenant.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
      Resource = [aws_s3_bucket.tenant.arn, "${aws_s3_bucket.tenant.arn}/*"]
    }]
  })
}
