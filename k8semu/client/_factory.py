"""Shared informers: one Informer per (kind, namespace) for every consumer in a process, as
client-go's SharedInformerFactory, so ten controllers watching Pods cost one watch.

Owns creating, starting, waiting on and stopping those informers. It does not reconcile and
adds no behaviour to the Informer itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from k8semu.client._cache import IndexFunc
from k8semu.client._client import Client
from k8semu.client._informer import DEFAULT_INFORMER_CONFIG, Informer, InformerConfig
from k8semu.client._models import resolve

M = TypeVar("M", bound=Message)


class SharedInformers:
    """`informer(kind)` hands every caller the same Informer; `start()` starts those not yet
    running (call it again after asking for more); `wait_synced()` waits for all of them."""

    def __init__(self, client: Client, *, config: InformerConfig = DEFAULT_INFORMER_CONFIG):
        self.client = client
        self.config = config
        self._informers: dict[tuple[str, str | None], Informer[Any]] = {}

    def informer(
        self,
        kind: type[M],
        *,
        namespace: str | None = None,
        indexers: Mapping[str, IndexFunc[M]] | None = None,
    ) -> Informer[M]:
        """The shared informer of `kind` (all namespaces unless `namespace`); `indexers` are
        added to it (an index of the same name must not be added twice)."""
        key = (resolve(kind).plural, namespace)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, kind, namespace=namespace, config=self.config)
            self._informers[key] = informer
        if indexers:
            new = {n: f for n, f in indexers.items() if n not in informer.cache.index_names()}
            if new:
                informer.add_indexers(new)
        return cast(Informer[M], informer)

    def start(self) -> None:
        for informer in self._informers.values():
            informer.start()

    def has_synced(self) -> bool:
        return all(i.has_synced() for i in self._informers.values())

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until every informer asked for so far has synced (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            for informer in list(self._informers.values()):
                await informer.wait_synced()

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()
