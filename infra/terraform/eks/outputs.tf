output "node_group_name" {
  description = "Name of the GPU node group."
  value       = aws_eks_node_group.gpu.node_group_name
}

output "node_labels" {
  description = "Labels on every GPU node; the pipeline's node selector uses headstart.io/pool (params.yaml pipeline.gpu_node_selector_*)."
  value       = local.node_labels
}

output "toleration" {
  description = "Toleration the pipeline's training tasks must carry (params.yaml pipeline.gpu_toleration_*)."
  value = {
    key      = local.gpu_taint_key
    operator = "Equal"
    value    = local.gpu_taint_value
    effect   = "NoSchedule"
  }
}
