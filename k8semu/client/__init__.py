"""Client side of the API: async client, informers, workqueue and leader election."""
