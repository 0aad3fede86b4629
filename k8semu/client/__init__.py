"""Client side of the API: async client, informers, workqueue and leader election.

Everything above the API server reaches cluster state through this package (docs/architecture.md,
decision 5). The public surface is what this module exports; the `_`-modules are private::

    async with Client(["127.0.0.1:6443"]) as client:
        pod = await client.get(core_pb2.Pod, "web", namespace="default")
        informer = Informer(client, core_pb2.Pod, indexers={NODE_NAME_INDEX: index_by_node_name})
        informer.add_event_handler(on_add=lambda p: queue.add(object_key(p)))
        informer.start()
        await informer.wait_synced()

Errors are the tree in `k8semu.client._errors` (ClientError at the root). The workqueue
lives in `k8semu.client.workqueue`, the shared worker loop in `k8semu.client.controller`,
the Events recorder in `k8semu.client.events`. See docs/client.md.
"""

from k8semu.client._cache import (
    NAMESPACE_INDEX,
    NODE_NAME_INDEX,
    OWNER_UID_INDEX,
    Indexer,
    IndexFunc,
    index_by_namespace,
    index_by_node_name,
    index_by_owner_uid,
)
from k8semu.client._client import ChannelFactory, Client, evict, request_token
from k8semu.client._config import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUTS,
    NO_RETRIES,
    Retries,
    Timeouts,
)
from k8semu.client._errors import (
    AlreadyExists,
    APIStatusError,
    ClientError,
    Conflict,
    ConnectFailed,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    OutcomeUnknown,
    ResourceExhausted,
    ServerError,
    Timeout,
    Unauthenticated,
    Unavailable,
    UnexpectedObject,
    Unimplemented,
    UnknownKind,
)
from k8semu.client._factory import SharedInformers
from k8semu.client._informer import (
    DEFAULT_INFORMER_CONFIG,
    EventHandlers,
    Informer,
    InformerConfig,
)
from k8semu.client._leaderelection import (
    DEFAULT_LEADER_ELECTION,
    KUBERNETES_LEADER_ELECTION,
    LeaderElectionConfig,
    LeaderElector,
)
from k8semu.client._models import (
    EventType,
    KindRef,
    ObjectList,
    Preconditions,
    WatchEvent,
    object_key,
    split_key,
)

__all__ = [
    "DEFAULT_INFORMER_CONFIG",
    "DEFAULT_LEADER_ELECTION",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUTS",
    "KUBERNETES_LEADER_ELECTION",
    "NAMESPACE_INDEX",
    "NODE_NAME_INDEX",
    "NO_RETRIES",
    "OWNER_UID_INDEX",
    "APIStatusError",
    "AlreadyExists",
    "ChannelFactory",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectFailed",
    "EventHandlers",
    "EventType",
    "Forbidden",
    "Gone",
    "IndexFunc",
    "Indexer",
    "Informer",
    "InformerConfig",
    "Invalid",
    "KindRef",
    "LeaderElectionConfig",
    "LeaderElector",
    "NotFound",
    "ObjectList",
    "OutcomeUnknown",
    "Preconditions",
    "ResourceExhausted",
    "Retries",
    "ServerError",
    "SharedInformers",
    "Timeout",
    "Timeouts",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedObject",
    "Unimplemented",
    "UnknownKind",
    "WatchEvent",
    "evict",
    "index_by_namespace",
    "index_by_node_name",
    "index_by_owner_uid",
    "object_key",
    "request_token",
    "split_key",
]
