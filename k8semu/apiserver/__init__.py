"""The API server: the cluster's only entry point and the only client of the store.

    errors.py      StatusError and its subclasses, one per gRPC status code clients see
    objects.py     keys, Any packing, metadata helpers, field selectors per kind
    defaults.py    defaulting as Kubernetes applies it (one table)
    validation.py  semantic validation on create and update (names, immutable fields, ...)
    store.py       the etcd v3 client: deadlines, one retry of reads, error translation
    service.py     the gRPC servicer (Create/Get/List/Watch/Update/UpdateStatus/Delete/Discovery)
    allocation.py  Service clusterIP / nodePort / load-balancer IP allocation (pure)
    bootstrap.py   the `kubernetes` Service, its Endpoints, each API server's Lease
    server.py      APIServer: start/stop, system namespaces, allocation repair

Stateless: any number of API servers can serve one store; all state is in the store and all
concurrency control is the store's compare-and-swap on mod_revision.
"""
