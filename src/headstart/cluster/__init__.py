"""Training on a Kubernetes cluster: the PyTorchJob the pipeline launches and the bundles that carry its
dataset in and its outputs back."""
