"""The ``security`` section: whether the cluster's connections are TLS.

::

    security: {tls: false}   # plain text everywhere: benchmarks of the overhead, teaching

``tls`` (default true): ``k8semu up`` makes a CA and every component's certificate under
``<state-dir>/pki`` and every store and API server port serves mutual TLS. Turning it off is
deliberate, and ``up`` and ``status`` say so loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SecuritySpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecuritySpec:
    tls: bool = True
