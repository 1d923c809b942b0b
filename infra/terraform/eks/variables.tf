variable "region" {
  description = "AWS region of the existing EKS cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster the GPU node group joins."
  type        = string
}

variable "node_group_name" {
  description = "Name of the GPU managed node group."
  type        = string
  default     = "headstart-gpu"
}

variable "node_role_arn" {
  description = "ARN of the IAM role for the nodes (AmazonEKSWorkerNodePolicy, AmazonEC2ContainerRegistryReadOnly, AmazonEKS_CNI_Policy or IRSA for the CNI)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the nodes; pick subnets in AZs that offer instance_type."
  type        = list(string)
}

variable "machine_type" {
  description = "EC2 instance type of the GPU nodes; it determines the GPU model (g6.* = L4, g5.* = A10G, p4d.* = A100)."
  type        = string
  default     = "g6.2xlarge"
}

variable "gpu_type" {
  description = "GPU model of machine_type, recorded as the node label headstart.io/gpu-type (machine_type decides the actual GPU)."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_count" {
  description = "GPUs per node of machine_type; tells the cluster autoscaler what an empty group would provide."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_count >= 1
    error_message = "gpu_count must be at least 1."
  }
}

variable "ami_type" {
  description = "EKS-optimized AMI with the NVIDIA driver and container toolkit."
  type        = string
  default     = "AL2023_x86_64_NVIDIA"
}

variable "min_nodes" {
  description = "Minimum nodes. 0 lets the group scale to zero between retraining runs."
  type        = number
  default     = 0

  validation {
    condition     = var.min_nodes >= 0
    error_message = "min_nodes must be >= 0."
  }
}

variable "max_nodes" {
  description = "Maximum nodes (two parallel training tasks need two GPUs)."
  type        = number
  default     = 2

  validation {
    condition     = var.max_nodes >= 1
    error_message = "max_nodes must be >= 1."
  }
}

variable "spot" {
  description = "Use Spot capacity. Cheaper; nodes can be reclaimed, which the pipeline absorbs with retries and checkpoints."
  type        = bool
  default     = false
}

variable "disk_size_gb" {
  description = "Root volume size per node; the CUDA image and dataset cache live here."
  type        = number
  default     = 100
}

variable "tags" {
  description = "Extra AWS tags for the node group."
  type        = map(string)
  default     = {}
}
