"""Plugins for every test package: the shared real-process fixtures (`store`, `apiserver`)."""

pytest_plugins = ["tests.support.fixtures"]
