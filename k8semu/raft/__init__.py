"""Raft-lite: the pure consensus core (``core``) and, beside it, the asyncio driver and transports.

The core is deterministic and does no I/O; see ``k8semu.raft.core`` for the Ready contract.
"""

from __future__ import annotations

from k8semu.raft.core import Config, Raft, ReadState, Ready, SoftState, StateRole
from k8semu.raft.errors import ProposalDropped, RaftError, SnapshotRejected

__all__ = [
    "Config",
    "ProposalDropped",
    "Raft",
    "RaftError",
    "ReadState",
    "Ready",
    "SnapshotRejected",
    "SoftState",
    "StateRole",
]
