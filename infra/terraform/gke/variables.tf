variable "project_id" {
  description = "GCP project that holds the GKE cluster."
  type        = string
}

variable "location" {
  description = "Region or zone of the existing GKE cluster (e.g. us-central1)."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing GKE cluster the GPU pool joins."
  type        = string
}

variable "node_pool_name" {
  description = "Name of the GPU node pool."
  type        = string
  default     = "headstart-gpu"
}

variable "node_locations" {
  description = "Zones for the pool's nodes; empty uses the cluster's zones. Pick zones that offer gpu_type."
  type        = list(string)
  default     = []
}

variable "machine_type" {
  description = "Machine type of the GPU nodes; it must accept gpu_type (g2-* for L4, a2-* for A100, n1-* for T4)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_type" {
  description = "Accelerator type attached to each node (nvidia-l4, nvidia-tesla-t4, nvidia-tesla-a100, ...)."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_count" {
  description = "GPUs per node."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_count >= 1
    error_message = "gpu_count must be at least 1."
  }
}

variable "gpu_driver_version" {
  description = "GKE-managed NVIDIA driver: DEFAULT, LATEST, or INSTALLATION_DISABLED (then install the driver yourself)."
  type        = string
  default     = "LATEST"

  validation {
    condition     = contains(["DEFAULT", "LATEST", "INSTALLATION_DISABLED"], var.gpu_driver_version)
    error_message = "gpu_driver_version must be DEFAULT, LATEST or INSTALLATION_DISABLED."
  }
}

variable "min_nodes" {
  description = "Minimum nodes in the whole pool. 0 lets the pool scale to zero between retraining runs."
  type        = number
  default     = 0

  validation {
    condition     = var.min_nodes >= 0
    error_message = "min_nodes must be >= 0."
  }
}

variable "max_nodes" {
  description = "Maximum nodes in the whole pool (two parallel training tasks need two GPUs)."
  type        = number
  default     = 2

  validation {
    condition     = var.max_nodes >= 1
    error_message = "max_nodes must be >= 1."
  }
}

variable "spot" {
  description = "Use Spot VMs. Cheaper; nodes can be reclaimed, which the pipeline absorbs with retries and checkpoints."
  type        = bool
  default     = false
}

variable "disk_size_gb" {
  description = "Boot disk size per node; the CUDA image and dataset cache live here."
  type        = number
  default     = 100
}

variable "disk_type" {
  description = "Boot disk type."
  type        = string
  default     = "pd-balanced"
}

variable "node_service_account" {
  description = "Email of a least-privilege GCP service account for the nodes (not the Compute Engine default)."
  type        = string
}
