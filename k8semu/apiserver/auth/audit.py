"""The audit log (kube-apiserver's --audit-log-path and --audit-policy-file).

The policy is Kubernetes' audit.k8s.io/v1 Policy: rules tried in order, the first that
matches a request (users, userGroups, verbs, resources by group/resources/resourceNames,
namespaces, nonResourceURLs) gives its level: None (not logged), Metadata (who, what, which
object, the outcome), Request (plus the request's object), RequestResponse (plus the
response's). No rule matching: None. Without a policy file every request is logged at
Metadata. Each request is one audit.k8s.io/v1 Event JSON line at stage ResponseComplete;
the file is rotated when it would pass `max_bytes` (--audit-log-maxsize, megabytes), keeping
`backups` old files (PATH.1 newest ... PATH.N).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k8semu.apiserver.auth.attributes import Attributes

LEVELS = ("None", "Metadata", "Request", "RequestResponse")


class AuditPolicyError(ValueError):
    """A policy file that cannot be read or is not a valid Policy; names the field."""


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    def matches(self, attrs: Attributes) -> bool:
        if self.group != "*" and self.group != attrs.api_group:
            return False
        if self.resources and not any(
            r in ("*", attrs.full_resource) or (r == f"{attrs.resource}/*" and attrs.subresource)
            or (r == f"*/{attrs.subresource}" and attrs.subresource)
            for r in self.resources
        ):  # fmt: skip
            return False
        return not self.resource_names or attrs.name in self.resource_names


@dataclass(frozen=True, slots=True)
class PolicyRule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def matches(self, attrs: Attributes) -> bool:
        user = attrs.user
        if self.users and user.name not in self.users:
            return False
        if self.user_groups and not set(self.user_groups) & set(user.groups):
            return False
        if self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request:
            if self.resources or self.namespaces:
                return False
            return not self.non_resource_urls or any(
                u == attrs.path or (u.endswith("*") and attrs.path.startswith(u[:-1]))
                for u in self.non_resource_urls
            )
        if self.non_resource_urls:
            return False
        if self.namespaces and attrs.namespace not in self.namespaces:
            return False
        return not self.resources or any(g.matches(attrs) for g in self.resources)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[PolicyRule, ...] = field(default=(PolicyRule("Metadata"),))

    def level(self, attrs: Attributes) -> str:
        for rule in self.rules:
            if rule.matches(attrs):
                return rule.level
        return "None"


def _strings(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise AuditPolicyError(f"{path}: must be a list of strings")
    return tuple(raw)


def _rule(raw: Any, path: str) -> PolicyRule:
    if not isinstance(raw, dict):
        raise AuditPolicyError(f"{path}: must be a mapping")
    level = raw.get("level")
    if level not in LEVELS:
        raise AuditPolicyError(
            f'{path}.level: Unsupported value: "{level}": supported values: '
            + ", ".join(f'"{v}"' for v in LEVELS)
        )
    groups = []
    for j, gr in enumerate(raw.get("resources") or []):
        where = f"{path}.resources[{j}]"
        if not isinstance(gr, dict):
            raise AuditPolicyError(f"{where}: must be a mapping")
        groups.append(
            GroupResources(
                str(gr.get("group", "")),
                _strings(gr.get("resources"), f"{where}.resources"),
                _strings(gr.get("resourceNames"), f"{where}.resourceNames"),
            )
        )
    return PolicyRule(
        level,
        _strings(raw.get("users"), f"{path}.users"),
        _strings(raw.get("userGroups"), f"{path}.userGroups"),
        _strings(raw.get("verbs"), f"{path}.verbs"),
        tuple(groups),
        _strings(raw.get("namespaces"), f"{path}.namespaces"),
        _strings(raw.get("nonResourceURLs"), f"{path}.nonResourceURLs"),
    )


def parse_policy(text: str, source: str = "--audit-policy-file") -> Policy:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AuditPolicyError(f"{source}: not YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "Policy":
        raise AuditPolicyError(f"{source}: kind: must be Policy")
    if doc.get("apiVersion") not in ("audit.k8s.io/v1", "audit.k8s.io/v1beta1"):
        raise AuditPolicyError(f"{source}: apiVersion: must be audit.k8s.io/v1")
    rules = doc.get("rules")
    if not isinstance(rules, list) or not rules:
        raise AuditPolicyError(f"{source}: rules: Required value: at least one rule")
    return Policy(tuple(_rule(r, f"{source}: rules[{i}]") for i, r in enumerate(rules)))


def load_policy(path: str) -> Policy:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AuditPolicyError(f"--audit-policy-file: cannot read {path}: {exc}") from exc
    return parse_policy(text, f"--audit-policy-file {path}")


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass(slots=True)
class Record:
    """One request as the faces saw it (filled as the request goes)."""

    attrs: Attributes
    uri: str
    source_ip: str = ""
    user_agent: str = ""
    received: float = field(default_factory=time.time)
    code: int = 200
    request_object: Any = None
    response_object: Any = None


class AuditLog:
    """The writer: one JSON line per request its policy logs, rotated by size."""

    def __init__(self, path: str, policy: Policy, *, max_bytes: int = 0, backups: int = 0) -> None:
        self.policy = policy
        self._logger = logging.Logger(f"k8semu.audit.{path}")
        self._logger.propagate = False
        try:
            handler: logging.Handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            raise AuditPolicyError(f"--audit-log-path: cannot open {path}: {exc}") from exc
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._logger.addHandler(handler)

    def level(self, attrs: Attributes) -> str:
        return self.policy.level(attrs)

    def write(self, record: Record) -> None:
        level = self.policy.level(record.attrs)
        if level == "None":
            return
        self._logger.info(json.dumps(event(record, level), separators=(",", ":")))

    def close(self) -> None:
        self._handler.close()


def event(record: Record, level: str) -> dict[str, Any]:
    """The audit.k8s.io/v1 Event of `record` at `level`."""
    a = record.attrs
    out: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": record.uri,
        "verb": a.verb,
        "user": {"username": a.user.name, "uid": a.user.uid, "groups": list(a.user.groups)},
        "sourceIPs": [record.source_ip] if record.source_ip else [],
        "userAgent": record.user_agent,
        "responseStatus": {"metadata": {}, "code": record.code},
        "requestReceivedTimestamp": _timestamp(record.received),
        "stageTimestamp": _timestamp(time.time()),
    }
    if a.resource_request:
        ref = {"resource": a.resource, "namespace": a.namespace, "name": a.name,
               "apiGroup": a.api_group, "subresource": a.subresource}  # fmt: skip
        out["objectRef"] = {k: v for k, v in ref.items() if v}
    if level in ("Request", "RequestResponse") and record.request_object is not None:
        out["requestObject"] = record.request_object
    if level == "RequestResponse" and record.response_object is not None:
        out["responseObject"] = record.response_object
    return out
