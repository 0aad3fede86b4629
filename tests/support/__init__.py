"""Test support shared by the test packages: the pytest plugin of real-process fixtures
(`fixtures`, registered in tests/conftest.py), a test API server, the in-memory fake client,
the etcdctl output normaliser and the poll-with-a-deadline. Not shipped: nothing under k8semu
imports it."""
