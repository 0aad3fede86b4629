"""The cluster autoscaler: sizes the autoscaled node pools of the cluster config.

controller.py carries out what planner.py decides; pools.py reads the pools (the controller
manager's ``--node-pools``); targets.py is the ConfigMap the supervisors act on. This package
module imports none of them, so the controller manager's config can use pools.py alone.
"""
