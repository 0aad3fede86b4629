"""The controller manager's reconcile loops (design decision 5), one module per controller, and
the manager that runs them under leader election. Everything here reaches cluster state only
through `k8semu.client`."""
