# The AMI for every Ray node: the newest "Deep Learning OSS Nvidia Driver AMI GPU
# PyTorch 2.x (Ubuntu 22.04)" owned by Amazon in var.region, resolved once at apply
# time, so a whole run uses one image (Ray needs the same Python on every node). Set
# var.ami_id to pin a specific image instead. Exposed as output `ami_id` for
# `dfray cluster render` (node_config.ImageId of every node type).

data "aws_ami" "dlami" {
  count = var.ami_id == null ? 1 : 0

  owners      = ["amazon"]
  most_recent = true

  filter {
    name   = "name"
    values = [var.ami_name_pattern]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "state"
    values = ["available"]
  }
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.dlami[0].id
}
