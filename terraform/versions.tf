# Terraform and provider pins for the dfray AWS stack.
#
# Offline checks (no AWS credentials needed):
#   terraform init -backend=false -plugin-dir=/opt/tf-plugins && terraform validate
# CI runs the same through .ci/terraform.sh, plus `terraform fmt -check` and checkov.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

provider "aws" {
  region = var.region

  # Every taggable resource gets these. They are NOT the `ray-cluster-name` tag:
  # that one is set by Ray's node provider on the instances it launches and is
  # what the head role's EC2 permissions key on (see iam.tf).
  default_tags {
    tags = merge(var.tags, {
      "dfray:cluster" = var.cluster_name
      "managed-by"    = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}
