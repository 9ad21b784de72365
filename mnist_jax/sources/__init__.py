"""Readers for datasets in formats other than MNIST IDX files; each returns a data.Dataset."""
