"""Who is calling and what they may do: the API server's authentication, authorization and
audit, shared by both faces (gRPC and REST).

    user.py       UserInfo, the well-known users and groups
    authn.py      the authenticator chain: static token file, ServiceAccount JWTs, client
                  certificate subjects, anonymous
    tokens.py     ServiceAccount tokens: signing (TokenRequest) and verifying
    attributes.py what a request is about (Attributes) and kube-apiserver's 403 wording
    rbac.py       RBAC evaluation over the rbac.authorization.k8s.io objects
    node.py       the Node authorizer (kubelets: their Node, Lease, pods and what those use)
    policy.py     the default ClusterRoles and bindings the API server bootstraps
    audit.py      the audit policy and the audit.k8s.io/v1 Event log, rotated by size
    guard.py      Guard: authenticate -> authorize -> audit, one per API server
    grpcside.py   the Guard on a gRPC call; restside.py: the aiohttp middleware

Nothing here writes API objects except the bootstrap of the default policy; none of it
runs when the API server is started without authentication flags (AlwaysAllow).
"""
