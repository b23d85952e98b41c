# Pooled: the tenant only registers into the pool: a prefix of its own in the shared bucket, and an IAM
# role whose policy reaches that prefix and nothing else. Its rows live in the shared database (RLS).
locals {
  tags = {
    "paybill.dev/tenant"      = var.tenant_id
    "paybill.dev/plan"        = var.plan
    "paybill.dev/cost-center" = var.cost_center
    "paybill.dev/managed-by"  = "paybill"
  }
  name   = "paybill-${var.tenant_id}-pooled" # distinct from the other models\' names: a change of model builds this beside them
  prefix = "tenants/${var.tenant_id}/"
  user   = "tenant_${replace(var.tenant_id, "-", "_")}"
}

resource "aws_s3_bucket_object" "prefix" {
  bucket  = data.aws_s3_bucket.pool.id
  key     = local.prefix
  content = ""
  tags    = local.tags
}

resource "aws_iam_policy" "tenant" {
  name = local.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
      Resource = ["${data.aws_s3_bucket.pool.arn}/${local.prefix}*"]
    }]
  })
  tags = local.tags
}

resource "aws_iam_role" "tenant" {
  name = local.name
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ec2.amazonaws.com" } }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "tenant" {
  role       = aws_iam_role.tenant.name
  policy_arn = aws_iam_policy.tenant.arn
}

# The tenant's login in the shared database (the operator creates the role itself)
resource "terraform_data" "password" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}
