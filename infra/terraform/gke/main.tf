# GPU node pool for Headstart's training tasks on an existing GKE cluster.
#
# The taint and label below are what the pipeline's toleration and node selector
# target: they must equal the `pipeline:` section of params.yaml
# (tests/unit/test_infra.py reads both and compares them).

locals {
  # headstart.io/pool is what the pipeline selects on; gpu-type is for people.
  node_labels = {
    "headstart.io/pool"     = "gpu"
    "headstart.io/gpu-type" = var.gpu_type
  }

  gpu_taint_key   = "nvidia.com/gpu"
  gpu_taint_value = "present"
  # GKE's spelling of the Kubernetes effect NoSchedule.
  gpu_taint_effect = "NO_SCHEDULE"
}

resource "google_container_node_pool" "gpu" {
  name           = var.node_pool_name
  project        = var.project_id
  location       = var.location
  cluster        = var.cluster_name
  node_locations = length(var.node_locations) > 0 ? var.node_locations : null

  # Created empty; the cluster autoscaler adds nodes when a training pod is pending.
  initial_node_count = var.min_nodes

  autoscaling {
    total_min_node_count = var.min_nodes
    total_max_node_count = var.max_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.machine_type
    image_type      = "COS_CONTAINERD"
    disk_size_gb    = var.disk_size_gb
    disk_type       = var.disk_type
    spot            = var.spot
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    labels = local.node_labels

    taint {
      key    = local.gpu_taint_key
      value  = local.gpu_taint_value
      effect = local.gpu_taint_effect
    }

    guest_accelerator {
      type  = var.gpu_type
      count = var.gpu_count

      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  lifecycle {
    # The autoscaler owns the node count after creation.
    ignore_changes = [initial_node_count]
  }
}
