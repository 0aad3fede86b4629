"""Benchmarks: load generators that measure k8semu and compare it with the real thing."""
