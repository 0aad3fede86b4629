"""securityContext ids (pod and container) are validated as Kubernetes validates them."""

from __future__ import annotations

from k8semu.apiserver.registry import pods
from k8semu.pb.api.v1 import core_pb2


def _spec() -> core_pb2.PodSpec:
    spec = core_pb2.PodSpec(restart_policy="Always")
    spec.containers.add(name="main", image="busybox")
    return spec


def test_ids_in_range_pass_and_out_of_range_name_the_field() -> None:
    spec = _spec()
    spec.security_context.run_as_user = 0
    spec.security_context.fs_group = 2000
    spec.containers[0].security_context.run_as_group = 2**31 - 1
    assert list(pods.validate_spec(spec, "spec")) == []
    spec.security_context.run_as_user = -1
    spec.security_context.supplemental_groups.append(2**31)
    spec.containers[0].security_context.run_as_group = -5
    got = sorted(e.path for e in pods.validate_spec(spec, "spec"))
    assert got == [
        "spec.containers[0].securityContext.runAsGroup",
        "spec.securityContext.runAsUser",
        "spec.securityContext.supplementalGroups[0]",
    ]
    assert {e.message for e in pods.validate_spec(spec, "spec")} == {
        "must be between 0 and 2147483647, inclusive"
    }
