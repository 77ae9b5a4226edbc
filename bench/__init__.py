"""Benchmarks: each prints its figures and its ratio to an anchor measured in the same run."""
