"""The Secret row (v1): `stringData` is a write-only convenience.

Kubernetes merges a Secret's stringData into data when it decodes any write (create, update,
every patch type, server-side apply: the merged object is decoded the same way), a
stringData key replacing a data key of the same name, and never stores or returns
stringData. Here the merge is the row's defaulting, which the strategy runs on create and on
every update; every patch and apply ends in that update, so no write path can skip it.
Pure: no I/O.
"""

from __future__ import annotations

from k8semu.pb.api.v1 import core_pb2


def merge_string_data(secret: core_pb2.Secret) -> None:
    """Move stringData into data (UTF-8; stringData wins a shared key). In place."""
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")
