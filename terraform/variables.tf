variable "region" {
  description = "AWS region for the bucket and the host."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must look like eu-west-1 or us-gov-west-1."
  }
}

variable "name" {
  description = "Name prefix for every resource (lowercase letters, digits and dashes)."
  type        = string
  default     = "sentinel-remedy"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "The name must be 3 to 31 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the incident bucket; empty picks \"<name>-incidents-<account id>\"."
  type        = string
  default     = ""

  validation {
    condition     = var.bucket_name == "" || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket name must be 3 to 63 lowercase letters, digits, dots or dashes."
  }
}

variable "archive_prefix" {
  description = "Key prefix of the bundles; the daemon may write only below it."
  type        = string
  default     = "incidents"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9!_.*'()-]*(/[A-Za-z0-9!_.*'()-]+)*$", var.archive_prefix))
    error_message = "The prefix must be non-empty, without leading or trailing slashes."
  }
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; empty uses SSE-S3 (AES256)."
  type        = string
  default     = ""

  validation {
    condition     = var.kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN or empty."
  }
}

variable "transition_days" {
  description = "Days after which bundles move to STANDARD_IA."
  type        = number
  default     = 30

  validation {
    condition     = var.transition_days >= 30
    error_message = "S3 allows STANDARD_IA transitions after 30 days at the earliest."
  }
}

variable "expiration_days" {
  description = "Days after which bundles are deleted (non-current versions too)."
  type        = number
  default     = 365

  validation {
    condition     = var.expiration_days >= 1
    error_message = "expiration_days must be at least 1."
  }
}

variable "create_host" {
  description = "Create the EC2 host that runs PostgreSQL and the daemon as a compose stack."
  type        = bool
  default     = true
}

variable "instance_type" {
  description = "EC2 instance type of the host."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z0-9]+\\.[a-z0-9]+$", var.instance_type))
    error_message = "The instance type must look like t3.small."
  }
}

variable "root_volume_gb" {
  description = "Size of the host's encrypted root volume in GiB (holds the database)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_gb >= 16 && var.root_volume_gb <= 16384
    error_message = "root_volume_gb must be between 16 and 16384."
  }
}

variable "subnet_id" {
  description = "Subnet for the host; empty uses the first subnet of the default VPC."
  type        = string
  default     = ""
}

variable "ssh_cidr_blocks" {
  description = "CIDR blocks allowed to reach SSH; empty (the default) opens no SSH port: use SSM Session Manager."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "Each entry must be a CIDR block, and SSH is never opened to 0.0.0.0/0."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH; empty for none (SSM only)."
  type        = string
  default     = ""
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore so the host is reachable through Session Manager."
  type        = bool
  default     = true
}

variable "sentinel_image" {
  description = "Image of the daemon, from your registry (build it with compose/Dockerfile)."
  type        = string
  default     = "sentinel-remedy:latest"
}

variable "postgres_image" {
  description = "PostgreSQL image of the compose stack."
  type        = string
  default     = "postgres:16"
}

variable "slack_webhook_url" {
  description = "Slack incoming webhook for alerts (empty: none). Stored in the instance's user data: prefer SSM parameters for production."
  type        = string
  default     = ""
  sensitive   = true
}

variable "create_access_key_user" {
  description = "Also create an IAM user with an access key, for daemons on non-AWS hosts. Off by default: use the instance role."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
