# GPU managed node group for Headstart's training tasks on an existing EKS cluster.
#
# The taint and label below are what the pipeline's toleration and node selector
# target: they must equal the `pipeline:` section of params.yaml
# (tests/unit/test_infra.py reads both and compares them).
#
# The AL2023 NVIDIA AMI ships the driver; the NVIDIA device plugin (see
# infra/README.md) advertises nvidia.com/gpu to the scheduler.

locals {
  # headstart.io/pool is what the pipeline selects on; gpu-type is for people.
  node_labels = {
    "headstart.io/pool"     = "gpu"
    "headstart.io/gpu-type" = var.gpu_type
  }

  gpu_taint_key   = "nvidia.com/gpu"
  gpu_taint_value = "present"
  # EKS's spelling of the Kubernetes effect NoSchedule.
  gpu_taint_effect = "NO_SCHEDULE"

  # Scaling up from zero: the cluster autoscaler cannot inspect a node that does not
  # exist yet, so the group's Auto Scaling group tells it the labels, taint and GPUs
  # a new node would have.
  autoscaler_node_template_tags = merge(
    { for k, v in local.node_labels : "k8s.io/cluster-autoscaler/node-template/label/${k}" => v },
    {
      "k8s.io/cluster-autoscaler/node-template/taint/${local.gpu_taint_key}" = "${local.gpu_taint_value}:NoSchedule"
      "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"     = tostring(var.gpu_count)
      "k8s.io/cluster-autoscaler/enabled"                                    = "true"
      "k8s.io/cluster-autoscaler/${var.cluster_name}"                        = "owned"
    },
  )
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = var.cluster_name
  node_group_name = var.node_group_name
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids

  ami_type       = var.ami_type
  instance_types = [var.machine_type]
  capacity_type  = var.spot ? "SPOT" : "ON_DEMAND"
  disk_size      = var.disk_size_gb

  scaling_config {
    min_size     = var.min_nodes
    desired_size = var.min_nodes
    max_size     = var.max_nodes
  }

  update_config {
    max_unavailable = 1
  }

  labels = local.node_labels

  taint {
    key    = local.gpu_taint_key
    value  = local.gpu_taint_value
    effect = local.gpu_taint_effect
  }

  tags = var.tags

  lifecycle {
    # The cluster autoscaler owns the desired size after creation.
    ignore_changes = [scaling_config[0].desired_size]
  }
}

resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = local.autoscaler_node_template_tags

  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
