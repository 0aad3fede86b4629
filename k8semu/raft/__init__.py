"""Raft-lite: the pure consensus core (``core``) and, beside it, the asyncio driver and transports.

The core is deterministic and does no I/O; see ``k8semu.raft.core`` for the Ready contract.
"""

from __future__ import annotations

from k8semu.raft.config import Config
from k8semu.raft.core import Raft
from k8semu.raft.errors import ProposalDropped, RaftError, SnapshotRejected
from k8semu.raft.ready import ReadState, Ready, SoftState, StateRole

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
