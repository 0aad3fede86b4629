"""Kubernetes' REST API: the API server's second face, beside its gRPC API (DESIGN decision 11).

    server.py     RESTServer: aiohttp on its own port, the route table, errors as Status
    paths.py      Kubernetes' resource paths -> Target (kind, namespace, name, subresource)
    discovery.py  /api, /apis, APIResourceLists, /version
    handlers.py   the resource verbs: each calls the same verb the gRPC face calls
    watch.py      watch streams: JSON lines, initial ADDED events, bookmarks, ERROR events
    tables.py     meta.k8s.io/v1 Table (kubectl get's columns) and PartialObjectMetadata
    codec.py      bodies, media types, fieldValidation, Accept
    status.py     metav1.Status: reasons, codes and wording

It holds no state of its own beyond a cache of encoded watch events: objects, rules, storage
and watches are the verbs' (`service.py`), so kubectl sees exactly what gRPC clients see.
"""
