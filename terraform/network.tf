# Network: one VPC, one PUBLIC subnet per AZ, an internet gateway, and an S3
# gateway endpoint.
#
# Why public subnets and no NAT gateway: Ray's AWS launcher only accepts subnets
# with MapPublicIpOnLaunch unless `use_internal_ips: true`, and with internal IPs
# the operator's `ray up` / `ray job submit` must run from inside the VPC (VPN or
# bastion). A NAT gateway would add ~$33/month per AZ plus $0.045/GB processed
# for pip/apt/model downloads, spent from the same credit pool. Nodes still
# accept nothing from the internet except SSH and the Ray dashboard/job API from
# var.operator_cidr (see the security group below), and egress is limited to
# 80/443 plus intra-cluster traffic. S3 traffic (the corpus and results) goes
# through the free gateway endpoint, never over the internet gateway.

# The AZs are pinned by name (var.availability_zones) rather than "the first N of
# the region": GPU types are not offered in every AZ, and a pinned list cannot
# silently change when AWS adds a zone. The data source only confirms that each
# pinned AZ exists and is available (see the precondition on the subnets).
data "aws_availability_zones" "pinned" {
  state = "available"

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = "${var.cluster_name}-vpc"
  }
}

# Lock down the VPC's default security group: no rules at all, so anything
# launched without an explicit group (a mistake) can talk to nothing.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-default-deny"
  }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-igw"
  }
}

resource "aws_subnet" "public" {
  #checkov:skip=CKV_AWS_130:Ray's AWS launcher requires MapPublicIpOnLaunch subnets unless use_internal_ips is set (see the note at the top of network.tf); inbound traffic is restricted by the cluster security group.
  count = length(var.availability_zones)

  vpc_id                  = aws_vpc.this.id
  availability_zone       = var.availability_zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = true

  tags = {
    Name = "${var.cluster_name}-public-${var.availability_zones[count.index]}"
  }

  lifecycle {
    precondition {
      condition     = contains(data.aws_availability_zones.pinned.names, var.availability_zones[count.index])
      error_message = "Availability zone ${var.availability_zones[count.index]} is not an available zone of region ${var.region}; set availability_zones to AZs of that region."
    }
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-public"
  }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = length(var.availability_zones)

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# S3 traffic stays on the AWS network and costs nothing per GB (unlike a NAT).
# The endpoint policy is left at full access on purpose: corpora may live in
# buckets of other accounts (public datasets); the roles' IAM policies are what
# restrict which buckets the nodes may use.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.public.id]

  tags = {
    Name = "${var.cluster_name}-s3"
  }
}

# ---------------------------------------------------------------- security group

resource "aws_security_group" "cluster" {
  #checkov:skip=CKV2_AWS_5:Attached at launch time by the Ray autoscaler (SecurityGroupIds in infra/aws-cluster.yaml), not by Terraform.
  name        = "${var.cluster_name}-ray-cluster"
  description = "Ray cluster nodes of ${var.cluster_name}: node-to-node, operator SSH and Ray dashboard"
  vpc_id      = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-ray-cluster"
  }
}

resource "aws_vpc_security_group_ingress_rule" "intra_cluster" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "Ray node-to-node traffic (GCS, raylets, object manager, workers use many ports)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.cluster.id
}

resource "aws_vpc_security_group_ingress_rule" "operator_ssh" {
  security_group_id = aws_security_group.cluster.id
  description       = "SSH from the operator (ray up / ray attach)"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.operator_cidr
}

resource "aws_vpc_security_group_ingress_rule" "operator_ray_dashboard" {
  security_group_id = aws_security_group.cluster.id
  description       = "Ray dashboard and job submission API from the operator"
  ip_protocol       = "tcp"
  from_port         = 8265
  to_port           = 8265
  cidr_ipv4         = var.operator_cidr
}

resource "aws_vpc_security_group_egress_rule" "intra_cluster" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "Ray node-to-node traffic"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.cluster.id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.cluster.id
  description       = "HTTPS: AWS APIs, S3 endpoint, pip, model weights, container registries"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "http" {
  security_group_id = aws_security_group.cluster.id
  description       = "HTTP: Ubuntu apt mirrors"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

# ----------------------------------------------------------------- flow logs

locals {
  flow_log_group_name = "/dfray/${var.cluster_name}/vpc-flow-logs"
  flow_log_group_arn  = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.flow_log_group_name}"
}

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = local.flow_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.cluster_name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }

  statement {
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "vpc" {
  vpc_id                   = aws_vpc.this.id
  traffic_type             = var.flow_log_traffic_type
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 600
}
