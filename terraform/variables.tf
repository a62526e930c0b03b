# Inputs of the dfray AWS stack. Copy terraform.tfvars.example to terraform.tfvars
# and fill in at least operator_cidr, alert_emails and budget_usd.

variable "region" {
  description = "AWS region for every resource (buckets, VPC, instances launched by Ray)."
  type        = string
  default     = "us-west-2"
}

variable "cluster_name" {
  description = <<-EOT
    Ray cluster name. Must equal `cluster_name` in the rendered Ray cluster config:
    Ray tags every instance it launches with `ray-cluster-name = <cluster_name>`,
    and the head role may only launch, tag and terminate instances carrying that tag.
    Also used as the prefix of bucket, role and budget names.
  EOT
  type        = string
  default     = "dfray"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.cluster_name))
    error_message = "cluster_name must be 2-20 characters of lowercase letters, digits and '-', starting with a letter (it is part of S3 bucket names)."
  }
}

variable "operator_cidr" {
  description = "CIDR allowed to reach the head node on SSH (22) and the Ray dashboard / job API (8265), e.g. your office or VPN egress as a /32."
  type        = string

  # A minimum prefix length of /16 (at most 65,536 addresses): 0.0.0.0/0 is refused, and so
  # are near-equivalents such as 0.0.0.0/1 or 128.0.0.0/1 that a plain "!= 0.0.0.0/0"
  # check lets through.
  validation {
    condition     = can(cidrhost(var.operator_cidr, 0)) && try(tonumber(split("/", var.operator_cidr)[1]) >= 16, false)
    error_message = "operator_cidr must be a valid IPv4 CIDR with a prefix length of /16 or longer (e.g. your egress IP as a /32); 0.0.0.0/0, 0.0.0.0/1 and other wide ranges are refused."
  }
}

variable "alert_emails" {
  description = "Email addresses that receive budget alerts and the budget-action notice (1 to 10)."
  type        = list(string)

  validation {
    condition     = length(var.alert_emails) >= 1 && length(var.alert_emails) <= 10 && alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alert_emails must hold 1 to 10 email addresses."
  }
}

variable "budget_usd" {
  description = <<-EOT
    Spending cap in USD per budget period, measured WITHOUT credits and refunds
    (so it tracks burn against a credit pool, not the invoice, which stays at $0
    while credits last). At 100% of actual spend the budget action attaches a
    policy that denies launching new EC2 instances to the head role.
  EOT
  type        = number

  validation {
    condition     = var.budget_usd > 0
    error_message = "budget_usd must be positive."
  }
}

variable "budget_time_unit" {
  description = "Budget period. MONTHLY by default; ANNUALLY approximates a one-off credit grant better."
  type        = string
  default     = "MONTHLY"

  validation {
    condition     = contains(["MONTHLY", "QUARTERLY", "ANNUALLY"], var.budget_time_unit)
    error_message = "budget_time_unit must be MONTHLY, QUARTERLY or ANNUALLY."
  }
}

variable "videos_bucket_name" {
  description = "Name of the corpus (videos) bucket. Default: <cluster_name>-videos-<account id>-<region>."
  type        = string
  default     = null
}

variable "results_bucket_name" {
  description = "Name of the results bucket. Default: <cluster_name>-results-<account id>-<region>."
  type        = string
  default     = null
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete non-empty buckets. Leave false outside throw-away test accounts."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten/deleted object versions are removed for good."
  type        = number
  default     = 30
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted (their parts are billed until then)."
  type        = number
  default     = 7
}

variable "vpc_cidr" {
  description = "CIDR of the cluster VPC."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR."
  }
}

variable "availability_zones" {
  description = <<-EOT
    AZs of var.region to create one public subnet in (at least 2). Each is a spot
    capacity pool that Ray tries in order when a launch fails, so pick AZs that
    offer your GPU types:
      aws ec2 describe-instance-type-offerings --region <region> \
        --location-type availability-zone \
        --filters Name=instance-type,Values=g4dn.xlarge,g5.xlarge,g6.xlarge
    The default matches the default region; change both together.
  EOT
  type        = list(string)
  default     = ["us-west-2a", "us-west-2b"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list 2 to 6 distinct AZ names."
  }
}

variable "worker_instance_types" {
  description = <<-EOT
    Exact EC2 instance types the head node may launch: the InstanceType of every
    worker node type in infra/aws-cluster.yaml, and nothing else (no wildcards, so a
    misconfigured cluster cannot launch e.g. g5.48xlarge at ~$16/h on the budget).
    Keep it equal to the template's worker types (tests/test_infra_config.py checks).
  EOT
  type        = list(string)
  default     = ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"]

  validation {
    condition     = length(var.worker_instance_types) > 0 && alltrue([for t in var.worker_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "worker_instance_types must list exact instance types such as g5.xlarge (no wildcards)."
  }
}

variable "worker_volume_max_gb" {
  description = "Largest EBS root volume (GiB, gp3, encrypted) the head may create with a worker; infra/aws-cluster.yaml uses 150."
  type        = number
  default     = 150

  validation {
    condition     = var.worker_volume_max_gb >= 8 && var.worker_volume_max_gb <= 1024
    error_message = "worker_volume_max_gb must be between 8 and 1024."
  }
}

variable "flow_log_traffic_type" {
  description = "VPC flow log traffic type: ALL, ACCEPT or REJECT (REJECT is cheapest)."
  type        = string
  default     = "ALL"

  validation {
    condition     = contains(["ALL", "ACCEPT", "REJECT"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be ALL, ACCEPT or REJECT."
  }
}

variable "log_retention_days" {
  description = "Retention of the VPC flow log group, in days (checkov CKV_AWS_338 wants >= 365)."
  type        = number
  default     = 365
}

variable "create_spot_service_linked_role" {
  description = <<-EOT
    Create the AWSServiceRoleForEC2Spot service-linked role. Launching spot
    instances needs it; it exists already in accounts that ever used spot, and
    creating it a second time fails, so this is off by default. The head role is
    not allowed to create it itself.
  EOT
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

variable "ami_id" {
  description = "AMI for the Ray nodes. Default (null): the newest Amazon-owned image matching ami_name_pattern in var.region."
  type        = string
  default     = null
}

variable "ami_name_pattern" {
  description = "Name filter for the AMI lookup when ami_id is null."
  type        = string
  default     = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.* (Ubuntu 22.04) *"
}
