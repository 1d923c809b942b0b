"""Datasets: importing Fashion-MNIST, reading ImageFolder splits, decoding into tensors."""
