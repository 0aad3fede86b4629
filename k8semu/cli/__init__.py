"""The `k8semu` command line: one module per command group."""
