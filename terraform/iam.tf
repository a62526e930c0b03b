# Least-privilege roles for the Ray head and workers.
#
# Head: runs the Ray autoscaler, which (ray/autoscaler/_private/aws/node_provider.py)
#   - lists instances:          ec2:DescribeInstances (filtered by the ray-cluster-name tag)
#   - launches workers:         ec2:RunInstances with TagSpecifications
#                               (ray-cluster-name, ray-node-type, ...), spot or on-demand
#   - retags / removes workers: ec2:CreateTags (Ray's keys only, never ray-cluster-name),
#                               ec2:TerminateInstances
#   - reads instance types / images: ec2:DescribeInstanceTypes, ec2:DescribeImages
#     (the full list of Describe calls is in head_autoscaler below)
#   - hands workers their instance profile: iam:PassRole (worker role only)
#   ec2:StopInstances/StartInstances are NOT granted: infra/aws-cluster.yaml sets
#   cache_stopped_nodes: false, so Ray terminates idle workers instead of stopping them.
#   The head also drives dfray (listing the corpus, writing run.json, the price book
#   and the spend governor): S3 as below, pricing:GetProducts, budgets:ViewBudget.
# Worker: reads the corpus bucket, reads/writes the results bucket, nothing else.
#
# The autoscaler is the only EC2 caller on the cluster; `ray up` on the operator's
# machine (which creates the head node and an SSH key pair) uses the operator's
# own credentials, not these roles.

locals {
  ec2_arn_prefix  = "arn:${local.partition}:ec2:${var.region}:${local.account_id}"
  videos_arn      = aws_s3_bucket.this["videos"].arn
  results_arn     = aws_s3_bucket.this["results"].arn
  ray_cluster_tag = "ray-cluster-name"
  # Tag keys Ray's AWS node provider sets on running instances (ray.autoscaler.tags;
  # ray-node-name is written as Name). ray-cluster-name is deliberately absent.
  ray_mutable_tag_keys = [
    "Name",
    "ray-node-status",
    "ray-node-type",
    "ray-user-node-type",
    "ray-launch-config",
    "ray-runtime-config",
    "ray-file-mounts-contents",
    "ray-replica-index",
    "ray-launch-request",
  ]
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# ------------------------------------------------------------------ shared: data

data "aws_iam_policy_document" "cluster_data" {
  statement {
    sid       = "ListCorpusAndResults"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [local.videos_arn, local.results_arn]
  }

  statement {
    sid       = "ReadCorpus"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.videos_arn}/*"]
  }

  statement {
    sid = "ReadWriteResults"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${local.results_arn}/*"]
  }

  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

# ------------------------------------------------------------------------ worker

resource "aws_iam_role" "worker" {
  name               = "${var.cluster_name}-ray-worker"
  description        = "Ray workers of ${var.cluster_name}: read corpus, read/write results"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker_data" {
  name   = "corpus-read-results-readwrite"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.cluster_data.json
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.cluster_name}-ray-worker"
  role = aws_iam_role.worker.name
}

# -------------------------------------------------------------------------- head

resource "aws_iam_role" "head" {
  name               = "${var.cluster_name}-ray-head"
  description        = "Ray head of ${var.cluster_name}: autoscaler (own instances only) and dfray driver"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "head_data" {
  name   = "corpus-read-results-readwrite"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.cluster_data.json
}

data "aws_iam_policy_document" "head_autoscaler" {
  # Read-only calls that IAM cannot scope to resources. Listed one by one (not
  # ec2:Describe*) because some Describe* actions are resource-scopable.
  statement {
    sid = "DescribeEC2"
    actions = [
      "ec2:DescribeInstances",      # node provider: list this cluster's nodes
      "ec2:DescribeInstanceStatus", # node provider / dfray spend ledger
      "ec2:DescribeInstanceTypes",  # autoscaler: fill in CPU/GPU/memory per node type
      "ec2:DescribeImages",         # node provider: AMI checks
      "ec2:DescribeSubnets",        # launch config checks
      "ec2:DescribeSecurityGroups", # launch config checks
      "ec2:DescribeKeyPairs",       # launch config checks
      "ec2:DescribeAvailabilityZones",
      "ec2:DescribeInstanceTypeOfferings", # dfray planner: which AZs offer a type
      "ec2:DescribeSpotPriceHistory",      # dfray price book
    ]
    resources = ["*"]
  }

  # The instance itself: only with this cluster's tag in the launch request,
  # only from the allowed instance families, and only with IMDSv2 enforced.
  statement {
    sid       = "LaunchOnlyThisClustersInstances"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn_prefix}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.ray_cluster_tag}"
      values   = [var.cluster_name]
    }

    condition {
      test     = "StringEquals"
      variable = "ec2:InstanceType"
      values   = var.worker_instance_types
    }

    condition {
      test     = "StringEquals"
      variable = "ec2:MetadataHttpTokens"
      values   = ["required"]
    }
  }

  # The other resources a RunInstances call touches. Subnets and the security
  # group are pinned to this stack's; the rest are created by the call itself
  # (volume, ENI, spot request) or are read-only inputs (AMI, key pair).
  statement {
    sid     = "LaunchIntoThisClustersNetwork"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [for s in aws_subnet.public : s.arn],
      [
        aws_security_group.cluster.arn,
        "${local.ec2_arn_prefix}:network-interface/*",
        "${local.ec2_arn_prefix}:key-pair/*",
        "${local.ec2_arn_prefix}:spot-instances-request/*",
        # Only the AMI this stack resolved (output ami_id, rendered into every node).
        "arn:${local.partition}:ec2:${var.region}::image/${local.ami_id}",
      ],
    )
  }

  # The root volume a launch creates: gp3, encrypted, at most var.worker_volume_max_gb
  # (a 16 TiB io2 volume would bill the budget on its own).
  statement {
    sid       = "LaunchOnlyCappedEncryptedGp3Volumes"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn_prefix}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:VolumeType"
      values   = ["gp3"]
    }

    condition {
      test     = "NumericLessThanEquals"
      variable = "ec2:VolumeSize"
      values   = [tostring(var.worker_volume_max_gb)]
    }

    condition {
      test     = "Bool"
      variable = "ec2:Encrypted"
      values   = ["true"]
    }
  }

  statement {
    sid     = "TagOnLaunch"
    actions = ["ec2:CreateTags"]
    resources = [
      "${local.ec2_arn_prefix}:instance/*",
      "${local.ec2_arn_prefix}:volume/*",
      "${local.ec2_arn_prefix}:network-interface/*",
      "${local.ec2_arn_prefix}:spot-instances-request/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  statement {
    sid       = "TerminateOnlyThisClustersInstances"
    actions   = ["ec2:TerminateInstances"]
    resources = ["${local.ec2_arn_prefix}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/${local.ray_cluster_tag}"
      values   = [var.cluster_name]
    }
  }

  # Retagging a running instance: only the keys Ray's AWS node provider updates
  # (status, name, type, config hashes), never the cluster-name tag, so the head cannot
  # move an instance out of its cluster (and out of the budget ledger) or adopt another's.
  statement {
    sid       = "RetagOnlyRayKeysOfThisClustersInstances"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn_prefix}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/${local.ray_cluster_tag}"
      values   = [var.cluster_name]
    }

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.ray_mutable_tag_keys
    }
  }

  statement {
    sid       = "PassOnlyTheWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  # The Price List API has no resource-level permissions.
  statement {
    sid       = "PriceBook"
    actions   = ["pricing:GetProducts"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadOwnBudget"
    actions   = ["budgets:ViewBudget"]
    resources = ["arn:${local.partition}:budgets::${local.account_id}:budget/${local.budget_name}"]
  }
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name   = "ray-autoscaler-own-instances"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.head_autoscaler.json
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.cluster_name}-ray-head"
  role = aws_iam_role.head.name
}

# Spot launches need the EC2 Spot service-linked role; see the variable's note.
resource "aws_iam_service_linked_role" "spot" {
  count = var.create_spot_service_linked_role ? 1 : 0

  aws_service_name = "spot.amazonaws.com"
}
