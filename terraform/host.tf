# Optional host: Ubuntu with Docker and the compose plugin from Ubuntu's archive, running the
# compose stack from ../compose with the bucket wired in. Nothing is reachable from the
# internet: PostgreSQL stays on the compose network, SSH only from var.ssh_cidr_blocks.

data "aws_ami" "ubuntu" {
  count       = var.create_host ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_vpc" "default" {
  count   = var.create_host && var.subnet_id == "" ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.create_host && var.subnet_id == "" ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
}

data "aws_subnet" "host" {
  count = var.create_host ? 1 : 0
  id    = var.subnet_id != "" ? var.subnet_id : sort(data.aws_subnets.default[0].ids)[0]
}

resource "aws_security_group" "host" {
  count       = var.create_host ? 1 : 0
  name        = "${var.name}-host"
  description = "SentinelRemedy host: no inbound except optional SSH; PostgreSQL and the daemon API are not exposed"
  vpc_id      = data.aws_subnet.host[0].vpc_id

  dynamic "ingress" {
    for_each = length(var.ssh_cidr_blocks) > 0 ? [1] : []

    content {
      description = "SSH from the operators' networks only"
      from_port   = 22
      to_port     = 22
      protocol    = "tcp"
      cidr_blocks = var.ssh_cidr_blocks
    }
  }

  egress {
    description = "HTTPS out: S3, webhooks, package mirrors, SSM"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"] #tfsec:ignore:aws-ec2-no-public-egress-sgr
  }

  egress {
    description = "HTTP out: Ubuntu's package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "host" {
  #checkov:skip=CKV_AWS_126:Detailed (1-minute) monitoring costs extra; the daemon's own probes are the health signal.
  #checkov:skip=CKV_AWS_88:A public IP is needed for egress in the default VPC, which has no NAT; no inbound port is open to the internet (see the security group).
  count                       = var.create_host ? 1 : 0
  ami                         = data.aws_ami.ubuntu[0].id
  instance_type               = var.instance_type
  subnet_id                   = data.aws_subnet.host[0].id
  vpc_security_group_ids      = [aws_security_group.host[0].id]
  iam_instance_profile        = aws_iam_instance_profile.daemon.name
  key_name                    = var.key_name != "" ? var.key_name : null
  associate_public_ip_address = var.subnet_id == ""
  ebs_optimized               = true
  monitoring                  = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 2          # containers reach the role's credentials through one bridge hop
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    delete_on_termination = true
  }

  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/templates/user_data.sh.tftpl", {
    compose_file   = file("${path.module}/../compose/docker-compose.yml")
    bucket         = aws_s3_bucket.incidents.id
    prefix         = var.archive_prefix
    region         = var.region
    sentinel_image = var.sentinel_image
    postgres_image = var.postgres_image
    slack_webhook  = var.slack_webhook_url
  })

  tags = {
    Name = "${var.name}-host"
  }
}
