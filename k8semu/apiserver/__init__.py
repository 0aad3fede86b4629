"""The API server: the cluster's only entry point and the only client of the store.

    errors.py      StatusError and its subclasses, one per gRPC status code clients see
    objects.py     keys, Any packing, metadata helpers, label and field selectors
    validation.py  the validation every kind shares (metadata, size, immutable metadata)
    patch.py       JSON merge patch (RFC 7386) of objects
    deletion.py    what a delete does (delete now, mark, nothing) under a kind's deletion rules
    allocation.py  Service clusterIP / nodePort / load-balancer IP allocation (pure)
    registry/      one row (Strategy) per kind: its defaults, validation, status, selectors,
                   deletion rules, allocation hook; one module per kind that has rules
    txn.py         the etcd Txn pieces writes are made of
    store.py       the etcd v3 client: deadlines, one retry of reads, error translation
    service.py     the gRPC servicer: generic verbs that call a kind's row, never its name
    repair.py      namespace termination and allocation repair (beside and behind the verbs)
    watchcache.py  one etcd watch per kind, fanned out to client watches
    bootstrap.py   the `kubernetes` Service, its Endpoints, each API server's Lease
    compaction.py  kube-apiserver's compactor (--etcd-compaction-interval)
    eventttl.py    the Event lease (--event-ttl)
    server.py      APIServer: start/stop, system namespaces, the repairs at start

Stateless: any number of API servers can serve one store; all state is in the store and all
concurrency control is the store's compare-and-swap on mod_revision.
"""
