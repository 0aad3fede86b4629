"""Cluster backups: the backup file, taking one from a live store, keyspace export/import.

    archive    the backup file format: write, read the metadata, verify end to end, extract
    take       one consistent backup from the store's leader, over the etcd v3 API
    keyspace   export/import of the keyspace as JSON lines, between our store and a real etcd
    schedule   scheduled backups (a thread the supervisor runs), and pruning to the newest N

This package reaches the store only over its etcd v3 API (and reads the snapshot file format
of k8semu.store.snapshot); it knows nothing of the cluster launcher, the API server or the
CLI, which use it (import-linter keeps it so).
"""

from __future__ import annotations
