"""The informer's local cache: objects by key ("namespace/name") plus secondary indices.

Owns storage and lookup only; it does no I/O and calls no handler. Objects are stored and
handed out as they are (no copies): callers must treat them as read-only, because a change
would silently alter what every other reader sees and what the next update event compares
against. Copy before modifying (`new = type(obj)(); new.CopyFrom(obj)`).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from k8semu.client._models import meta, object_key

M = TypeVar("M", bound=Message)

IndexFunc = Callable[[M], Iterable[str]]
"""The index values of an object (none, one or several), e.g. its spec.nodeName."""

NAMESPACE_INDEX = "namespace"
NODE_NAME_INDEX = "spec.nodeName"
OWNER_UID_INDEX = "ownerUID"


def index_by_namespace(obj: Message) -> list[str]:
    return [meta(obj).namespace]


def index_by_node_name(obj: Message) -> list[str]:
    """A pod's spec.nodeName ("" for an unscheduled pod, so pending pods are one lookup)."""
    return [str(cast(Any, obj).spec.node_name)]


def index_by_owner_uid(obj: Message) -> list[str]:
    return [ref.uid for ref in meta(obj).owner_references]


class Indexer(Generic[M]):
    """Objects by key, and for each named index a map from index value to keys.

    Invariant: for every index name, value v and key k, k is in `_indices[name][v]` exactly
    when the object at k is stored and `indexers[name](obj)` yields v. Empty value sets are
    dropped, so the maps do not grow with churn.
    """

    def __init__(self, indexers: Mapping[str, IndexFunc[M]] | None = None) -> None:
        self._items: dict[str, M] = {}
        self._indexers: dict[str, IndexFunc[M]] = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    # ---- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> M | None:
        """The object at "namespace/name" (or "name" for cluster-scoped kinds), read-only."""
        return self._items.get(key)

    def get_by_name(self, name: str, namespace: str = "") -> M | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> list[M]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def index_names(self) -> builtins.list[str]:
        return list(self._indexers)

    def by_index(self, index: str, value: str) -> builtins.list[M]:
        """Objects whose `index` function yields `value`; KeyError for an unknown index."""
        return [self._items[k] for k in sorted(self._index(index).get(value, ()))]

    def index_keys(self, index: str, value: str) -> builtins.list[str]:
        return sorted(self._index(index).get(value, ()))

    def index_values(self, index: str) -> builtins.list[str]:
        return sorted(self._index(index))

    # ---- writes (the informer's) -------------------------------------------------------------

    def add_indexers(self, indexers: Mapping[str, IndexFunc[M]]) -> None:
        """Add indices, built at once over what is stored; a name in use is a ValueError."""
        for name, func in indexers.items():
            if name in self._indexers:
                raise ValueError(f"indexer {name!r} already exists")
            self._indexers[name] = func
            self._indices[name] = {}
            for key, obj in self._items.items():
                self._index_add(name, key, obj)

    def put(self, obj: M) -> M | None:
        """Store `obj` under its key; returns the object it replaced, if any."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            for name in self._indexers:
                self._index_remove(name, key, old)
        self._items[key] = obj
        for name in self._indexers:
            self._index_add(name, key, obj)
        return old

    def remove(self, key: str) -> M | None:
        """Drop the object at `key`; returns it, or None when there was none."""
        old = self._items.pop(key, None)
        if old is not None:
            for name in self._indexers:
                self._index_remove(name, key, old)
        return old

    # ---- internals -------------------------------------------------------------------------

    def _index(self, name: str) -> dict[str, set[str]]:
        try:
            return self._indices[name]
        except KeyError:
            raise KeyError(f"no index {name!r} (have: {', '.join(self._indexers)})") from None

    def _index_add(self, name: str, key: str, obj: M) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _index_remove(self, name: str, key: str, obj: M) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]
