"""The audit policy (Kubernetes' Policy: first matching rule's level), its bad-input errors,
the Event lines and rotation by size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.audit import AuditLog, AuditPolicyError, Record, parse_policy
from k8semu.apiserver.auth.user import authenticated

ALICE = authenticated("alice")
NODE = authenticated("system:node:n1", groups=("system:nodes",))
POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  userGroups: ["system:nodes"]
- level: RequestResponse
  resources: [{group: "", resources: ["secrets"]}]
- level: Request
  verbs: ["create", "update"]
  namespaces: ["prod"]
- level: None
  nonResourceURLs: ["/healthz*"]
- level: Metadata
"""


def test_first_matching_rule_decides() -> None:
    policy = parse_policy(POLICY)
    assert policy.level(Attributes(NODE, "update", "nodes", name="n1")) == "None"
    assert policy.level(Attributes(ALICE, "get", "secrets", namespace="x")) == "RequestResponse"
    assert policy.level(Attributes(ALICE, "create", "pods", namespace="prod")) == "Request"
    assert policy.level(Attributes(ALICE, "create", "pods", namespace="dev")) == "Metadata"
    health = Attributes(ALICE, "get", path="/healthz/ping", resource_request=False)
    assert policy.level(health) == "None"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: Loud}]",
         'rules\\[0\\].level: Unsupported value: "Loud"'),
        ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, verbs: get}]",
         "rules\\[0\\].verbs: must be a list of strings"),
        ("kind: Other\napiVersion: audit.k8s.io/v1\nrules: []", "kind: must be Policy"),
        ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: []", "rules: Required value"),
    ],
)  # fmt: skip
def test_bad_policies(text: str, problem: str) -> None:
    with pytest.raises(AuditPolicyError, match=problem):
        parse_policy(text)


def test_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), parse_policy(POLICY), max_bytes=2000, backups=2)
    attrs = Attributes(ALICE, "create", "pods", "", "", "prod", "web")
    try:
        for _ in range(30):
            log.write(Record(attrs, "/api/v1/namespaces/prod/pods", "127.0.0.1",
                             request_object={"kind": "Pod"}))  # fmt: skip
        log.write(Record(Attributes(NODE, "update", "nodes", name="n1"), "/api/v1/nodes/n1"))
    finally:
        log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2000
    line = json.loads(path.read_text().splitlines()[-1])
    assert line["kind"] == "Event" and line["apiVersion"] == "audit.k8s.io/v1"
    assert line["level"] == "Request" and line["verb"] == "create"
    assert line["user"]["username"] == "alice"
    assert line["objectRef"] == {"resource": "pods", "namespace": "prod", "name": "web"}
    assert line["requestObject"] == {"kind": "Pod"}
    assert "responseObject" not in line
