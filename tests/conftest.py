"""Plugins for every test package: the shared real-process fixtures (`store`, `apiserver`)."""

pytest_plugins = ["k8semu.testing.fixtures"]
