# Outputs consumed by `dfray cluster render` (infra/aws-cluster.yaml -> a ready
# Ray cluster config). Typical use:
#   dfray cluster render $(terraform -chdir=terraform output -raw cluster_render_args) ...

output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "cluster_name" {
  description = "Ray cluster name; the head role's EC2 permissions only cover instances tagged ray-cluster-name=<this>."
  value       = var.cluster_name
}

output "subnet_ids" {
  description = "Public subnet IDs, one per AZ (Ray's SubnetIds)."
  value       = aws_subnet.public[*].id
}

output "security_group_id" {
  description = "Security group for every Ray node (Ray's SecurityGroupIds)."
  value       = aws_security_group.cluster.id
}

output "head_instance_profile_arn" {
  description = "Instance profile ARN for the Ray head node type."
  value       = aws_iam_instance_profile.head.arn
}

output "worker_instance_profile_arn" {
  description = "Instance profile ARN for the Ray worker node types."
  value       = aws_iam_instance_profile.worker.arn
}

output "videos_bucket" {
  description = "Corpus bucket name (read-only for the cluster)."
  value       = aws_s3_bucket.this["videos"].id
}

output "results_bucket" {
  description = "Results bucket name (read/write for the cluster)."
  value       = aws_s3_bucket.this["results"].id
}

output "ami_id" {
  description = "AMI for every Ray node (node_config.ImageId); see ami.tf."
  value       = local.ami_id
}

output "kms_key_arn" {
  description = "KMS key encrypting both buckets; uploaders of the corpus need kms:GenerateDataKey on it."
  value       = aws_kms_key.data.arn
}

output "budget_name" {
  description = "Name of the AWS Budgets budget that carries the stop-new-instances action."
  value       = aws_budgets_budget.burn.name
}

output "cluster_render_args" {
  description = "Arguments for `dfray cluster render`, space-separated, subnet IDs comma-separated."
  value = join(" ", [
    "--region", var.region,
    "--cluster-name", var.cluster_name,
    "--subnet-ids", join(",", aws_subnet.public[*].id),
    "--security-group-id", aws_security_group.cluster.id,
    "--head-profile", aws_iam_instance_profile.head.arn,
    "--worker-profile", aws_iam_instance_profile.worker.arn,
    "--image-id", local.ami_id,
  ])
}
