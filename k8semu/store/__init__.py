"""The store: k8semu's etcd stand-in (Raft-replicated MVCC key-value store in SQLite)."""
