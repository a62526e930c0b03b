# One customer-managed KMS key encrypts both buckets (SSE-KMS with S3 Bucket Keys,
# so a corpus read by hundreds of workers does not turn into one KMS call per
# object) and the VPC flow log group. Rotation is on. The key policy delegates
# to IAM (root statement), so the head/worker roles get kms:Decrypt /
# kms:GenerateDataKey from their own policies in iam.tf, scoped to this key.

resource "aws_kms_key" "data" {
  description             = "dfray ${var.cluster_name}: S3 buckets and flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyViaIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsUsesKeyForFlowLogGroup"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnEquals = {
            "kms:EncryptionContext:aws:logs:arn" = local.flow_log_group_arn
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.cluster_name}-data"
  target_key_id = aws_kms_key.data.key_id
}
