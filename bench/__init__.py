"""Benchmarks: each prints JSON on stdout (see bench/README.md)."""
