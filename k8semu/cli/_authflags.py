"""The API server's authentication, authorization and audit flags (kube-apiserver's names)
and the AuthConfig they make."""

from __future__ import annotations

import argparse

from k8semu.apiserver.auth.config import DEFAULT_ISSUER, AuthConfig, check_files
from k8semu.apiserver.auth.guard import parse_modes


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"want true or false, got {text!r}")


def add(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("authentication, authorization and audit (docs/security.md)")
    g.add_argument(
        "--token-auth-file",
        default="",
        help='static bearer tokens, CSV lines token,user,uid,"group1,group2"',
    )
    g.add_argument("--service-account-key-file", action="append", default=[],
                   help="PEM public (or private) keys that verify ServiceAccount tokens;"
                   " repeatable")  # fmt: skip
    g.add_argument(
        "--service-account-signing-key-file",
        default="",
        help="PEM private key (RSA or EC) that signs ServiceAccount tokens",
    )
    g.add_argument(
        "--service-account-issuer",
        default=DEFAULT_ISSUER,
        help="the iss claim of the tokens this server signs and accepts",
    )
    g.add_argument(
        "--api-audiences",
        default="",
        help="audiences a token must name, comma-separated (default: the issuer)",
    )
    g.add_argument("--anonymous-auth", type=_bool, default=None,
                   help="true: requests without credentials are system:anonymous (default:"
                   " refused once an authenticator is configured)")  # fmt: skip
    g.add_argument("--enable-bootstrap-token-auth", action="store_true",
                   help="accept bootstrap tokens (kube-system bootstrap-token-<id> Secrets) as"
                   " system:bootstrap:<id> in system:bootstrappers")  # fmt: skip
    g.add_argument("--authorization-mode", default="AlwaysAllow",
                   help="comma-separated authorizers in order: RBAC, Node, AlwaysAllow,"
                   " AlwaysDeny (e.g. Node,RBAC)")  # fmt: skip
    g.add_argument("--audit-log-path", default="", help="audit.k8s.io/v1 Event JSON lines here")
    g.add_argument("--audit-policy-file", default="",
                   help="audit Policy (levels None/Metadata/Request/RequestResponse); default:"
                   " every request at Metadata")  # fmt: skip
    g.add_argument(
        "--audit-log-maxsize",
        type=int,
        default=0,
        help="megabytes before the audit log is rotated (0: never)",
    )
    g.add_argument("--audit-log-maxbackup", type=int, default=0,
                   help="rotated audit logs kept")  # fmt: skip


def config(ns: argparse.Namespace) -> AuthConfig:
    """The AuthConfig of the flags; ValueError naming the flag otherwise."""
    out = AuthConfig(
        token_auth_file=ns.token_auth_file,
        service_account_key_files=tuple(ns.service_account_key_file),
        service_account_signing_key_file=ns.service_account_signing_key_file,
        service_account_issuer=ns.service_account_issuer,
        api_audiences=tuple(a.strip() for a in ns.api_audiences.split(",") if a.strip()),
        anonymous_auth=ns.anonymous_auth,
        enable_bootstrap_token_auth=ns.enable_bootstrap_token_auth,
        authorization_modes=parse_modes(ns.authorization_mode),
        audit_log_path=ns.audit_log_path,
        audit_policy_file=ns.audit_policy_file,
        audit_log_maxsize=ns.audit_log_maxsize,
        audit_log_maxbackup=ns.audit_log_maxbackup,
    )
    check_files(out)
    return out
