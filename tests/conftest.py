"""Plugins for every test package: the shared real-process fixtures (`store`, `apiserver`),
and Hypothesis settings for a shared machine."""

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.support.fixtures"]

# The user's own CLI configuration and clusters (~/.k8semu/config and ~/.k8semu/clusters/local:
# `make run` makes its TLS cluster the current context and keeps its state) must not steer
# the `k8semu` commands tests run against their own plain servers: with them, `--server`
# alone dialled those with the context's TLS credentials and failed the handshake. Every
# test process (xdist workers too) gets an empty config and a state home of its own; tests
# that run `up` still give theirs via tests.support.cluster.user_env.
_CLI_HOME = tempfile.mkdtemp(prefix="k8semu-tests-cli-")
atexit.register(shutil.rmtree, _CLI_HOME, ignore_errors=True)
os.environ["K8SEMU_CONFIG"] = os.path.join(_CLI_HOME, "config")
os.environ["XDG_STATE_HOME"] = os.path.join(_CLI_HOME, "state")
with open(os.environ["K8SEMU_CONFIG"], "w") as _empty:  # a named file must exist
    _empty.write("apiVersion: v1\nkind: Config\n")

# make test runs on several workers beside real clusters: how fast Hypothesis draws examples
# (and how long one takes) says nothing about the property under test, so neither its
# too-slow health check nor its per-example deadline may fail a run on a busy machine.
settings.register_profile("k8semu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("k8semu")
