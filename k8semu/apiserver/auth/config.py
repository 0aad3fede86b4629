"""AuthConfig: the API server's authentication, authorization and audit settings (the flags
of kube-apiserver's names), and the Guard they build.

Nothing configured (the default) builds no Guard: every request is allowed, as before
authentication existed, so tests and tools that start an API server by hand keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.apiserver.auth.audit import AuditLog, Policy, load_policy
from k8semu.apiserver.auth.authn import Authenticator, load_token_file
from k8semu.apiserver.auth.guard import Guard
from k8semu.apiserver.auth.tokens import Issuer, Verifier, load_private_key, load_public_keys
from k8semu.apiserver.watchcache import WatchCaches

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
MEGABYTE = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    token_auth_file: str = ""
    service_account_key_files: tuple[str, ...] = ()
    service_account_signing_key_file: str = ""
    service_account_issuer: str = DEFAULT_ISSUER
    api_audiences: tuple[str, ...] = ()  # () : the issuer, as kube-apiserver defaults
    # None: anonymous only when no authenticator is configured (so `--authorization-mode`
    # alone, or an audit log alone, works on a plain cluster).
    anonymous_auth: bool | None = None
    enable_bootstrap_token_auth: bool = False
    authorization_modes: tuple[str, ...] = ("AlwaysAllow",)
    audit_log_path: str = ""
    audit_policy_file: str = ""
    audit_log_maxsize: int = 0  # megabytes; 0 never rotates
    audit_log_maxbackup: int = 0

    @property
    def enabled(self) -> bool:
        return bool(
            self.token_auth_file
            or self.service_account_key_files
            or self.service_account_signing_key_file
            or self.anonymous_auth is not None
            or self.enable_bootstrap_token_auth
            or self.authorization_modes != ("AlwaysAllow",)
            or self.audit_log_path
        )

    @property
    def audiences(self) -> tuple[str, ...]:
        return self.api_audiences or (self.service_account_issuer,)

    def check(self) -> None:
        """ValueError naming the flag for settings that cannot work together."""
        if self.audit_log_maxsize < 0 or self.audit_log_maxbackup < 0:
            raise ValueError("--audit-log-maxsize and --audit-log-maxbackup must be >= 0")
        if self.audit_policy_file and not self.audit_log_path:
            raise ValueError("--audit-policy-file needs --audit-log-path")
        if self.service_account_signing_key_file and not self.service_account_issuer:
            raise ValueError("--service-account-issuer is required to sign tokens")


def check_files(config: AuthConfig) -> None:
    """Read every file `config` names now (ValueError naming the flag), so a command line
    with a bad one is refused before anything starts."""
    config.check()
    if config.token_auth_file:
        load_token_file(config.token_auth_file)
    for path in config.service_account_key_files:
        load_public_keys(path, "--service-account-key-file")
    if config.service_account_signing_key_file:
        load_private_key(
            config.service_account_signing_key_file, "--service-account-signing-key-file"
        )
    if config.audit_policy_file:
        load_policy(config.audit_policy_file)


def build_guard(config: AuthConfig, caches: WatchCaches) -> Guard | None:
    """The Guard `config` describes (None: nothing configured); reads the key, token and
    policy files now, so a bad one fails the start with a message naming its flag."""
    if not config.enabled:
        return None
    config.check()
    tokens = load_token_file(config.token_auth_file) if config.token_auth_file else {}
    issuer = None
    keys = [
        key
        for path in config.service_account_key_files
        for key in load_public_keys(path, "--service-account-key-file")
    ]
    if config.service_account_signing_key_file:
        private = load_private_key(
            config.service_account_signing_key_file, "--service-account-signing-key-file"
        )
        issuer = Issuer(private, config.service_account_issuer, config.audiences)
        keys.append(private.public_key())
    verifier = Verifier(keys, config.service_account_issuer, config.audiences) if keys else None
    anonymous = config.anonymous_auth
    if anonymous is None:
        anonymous = not tokens and verifier is None and not config.enable_bootstrap_token_auth
    audit = None
    if config.audit_log_path:
        policy = load_policy(config.audit_policy_file) if config.audit_policy_file else Policy()
        audit = AuditLog(
            config.audit_log_path,
            policy,
            max_bytes=config.audit_log_maxsize * MEGABYTE,
            backups=config.audit_log_maxbackup,
        )
    authenticator = Authenticator(
        tokens=tokens,
        verifier=verifier,
        anonymous=anonymous,
        bootstrap=config.enable_bootstrap_token_auth,
    )
    return Guard(authenticator, config.authorization_modes, caches, audit=audit, issuer=issuer)
