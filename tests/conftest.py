"""Plugins for every test package: the shared real-process fixtures (`store`, `apiserver`),
and Hypothesis settings for a shared machine."""

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.support.fixtures"]

# make test runs on several workers beside real clusters: how fast Hypothesis draws examples
# (and how long one takes) says nothing about the property under test, so neither its
# too-slow health check nor its per-example deadline may fail a run on a busy machine.
settings.register_profile("k8semu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("k8semu")
