"""API objects: the typed object model and the helpers around it.

The objects themselves are the generated protobuf messages in k8semu.pb.api.v1 (decision 1:
one schema). This package adds what every component needs on top of them and nothing that
does I/O: the kind registry (kinds), YAML/JSON manifests with strict validation (manifest),
resource quantities (quantity), label and field selectors (selectors), Kubernetes' name
syntax (names), toleration matching (taints), object timestamps (timestamps) and the error
hierarchy (errors). See docs/api.md.
"""
