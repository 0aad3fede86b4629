"""The kubelet (`k8semu kubelet`): registers its Node, renews its Lease, runs the pods bound
to it through a runtime (real processes, or simulated for hollow nodes), reports their status
and serves their logs and exec. See docs/kubelet.md.

Modules: `config` (flags and defaults), `node` (Node, Lease, pod IPs, heartbeats: the node
agent), `podworker` (one task per pod: containers, restarts, probes), `podstatus` (the pod's
status from its containers' records), `runtime` (the runtime interface), `process` and
`simulated` (the two runtimes), `env`, `volumes`, `probes`, `backoff`, `ipam` (pure helpers),
`server` (the logs/exec gRPC service), `kubelet` (the component that ties them together).
"""
