"""`k8semu chaos`: faults injected into a running cluster at random but reproducible times,
with the invariants checked afterwards (store history linearizable, Deployments converge,
Service availability as clients saw it). See docs/chaos.md."""
