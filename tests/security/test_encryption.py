"""Secrets encrypted at rest, end to end: a real store (snapshots every few entries) and an
API server with --encryption-provider-config. A Secret's value (and its base64) is found in
no file of the store's directory (database, WAL, Raft log, snapshots) nor in a backup, while
the API and `k8semu get` read it back; key rotation by rewriting; a key the server lacks is
an error naming the object."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.api.v1 import core_pb2, meta_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.apiserver.conftest import Client, unpack
from tests.apiserver.rest.conftest import REST
from tests.support.apiserver import APIServerProcess, running
from tests.support.poll import eventually

KEY1, KEY2 = os.urandom(32), os.urandom(32)
RAW_KEY = b"/registry/secrets/default/db"


def _config(*keys: tuple[str, bytes], identity: bool = True) -> str:
    providers: list[dict[str, Any]] = [
        {"aesgcm": {"keys": [{"name": n, "secret": base64.b64encode(s).decode()} for n, s in keys]}}
    ]
    if identity:
        providers.append({"identity": {}})
    return yaml.safe_dump(
        {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"], "providers": providers}],
        }
    )


class Setup:
    def __init__(self, base: Path, store: K8semuStoreCluster, config: Path) -> None:
        self.base, self.store, self.config = base, store, config
        port = free_loopback_ports(1)[0]
        self.server = APIServerProcess(
            store,
            base / "apiserver.log",
            ["--encryption-provider-config", str(config), "--rest-address", f"127.0.0.1:{port}"],
        )
        self.server.wait_serving()
        self.rest = REST(f"http://127.0.0.1:{port}", self.server.address, tuple(store.endpoints))

    def with_config(self, text: str) -> None:
        """The API server restarted on another configuration."""
        self.config.write_text(text)
        self.server.restart()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("encryption")
    config = base / "encryption.yaml"
    config.write_text(_config(("key1", KEY1)))
    store = K8semuStoreCluster(base / "store", 1, extra_args=["--snapshot-count", "20"])
    with running(store):
        s = Setup(base, store, config)
        try:
            yield s
        finally:
            s.server.close()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[Client]:
    async with transport.channel(setup.server.address) as channel:
        yield Client(channel)


async def _raw(setup: Setup, key: bytes) -> bytes:
    """The value as the store holds it (asked over the etcd API, around the API server)."""
    async with transport.channel(setup.store.endpoints[0]) as channel:
        resp = await rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=key), timeout=10)
    assert resp.kvs, key
    return bytes(resp.kvs[0].value)


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for n in needles if n in data]
    return found


def _secret(name: str, value: bytes) -> core_pb2.Secret:
    return core_pb2.Secret(
        metadata=meta_pb2.ObjectMeta(name=name, namespace="default"), data={"password": value}
    )


def _get_cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", "get", "-s", setup.server.address, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_secret_value_is_in_no_file_of_the_store(setup: Setup, client: Client) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}".encode()
    marker = f"plain-{uuid.uuid4().hex}".encode()
    await client.create("secrets", _secret("db", value), "default")
    cm = core_pb2.ConfigMap(
        metadata=meta_pb2.ObjectMeta(name="marker"), data={"k": marker.decode()}
    )
    await client.create("configmaps", cm, "default")
    # Enough writes for the store to take snapshots (--snapshot-count 20) with the Secret in.
    for i in range(30):
        filler = core_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(name=f"filler-{i}"))
        await client.create("configmaps", filler, "default")
    backup = setup.store.base_dir / "backup.db"
    taken = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", "backup", "--endpoints",
         ",".join(setup.store.endpoints), "-o", str(backup)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    assert (await _raw(setup, RAW_KEY)).startswith(b"k8s:enc:aesgcm:v1:key1:")
    snapped = lambda: any(setup.store.base_dir.rglob("snap/*.snap"))  # noqa: E731
    await eventually(snapped, what="the store took no snapshot")
    needles = [value, base64.b64encode(value)]
    assert _files_containing(setup.store.base_dir, needles) == []
    # The search does read the files: the ConfigMap's (unencrypted) marker is found, backup too.
    seen = _files_containing(setup.store.base_dir, [marker])
    assert any("backup.db" in s for s in seen) and len(seen) >= 2, seen
    got = unpack((await client.get("secrets", "db", "default")).object, core_pb2.Secret)
    assert got.data["password"] == value
    listed = await client.list("secrets", "default")
    assert [unpack(o, core_pb2.Secret).data["password"] for o in listed.items] == [value]
    out = await asyncio.to_thread(_get_cli, setup, "secret", "db", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert base64.b64encode(value).decode() in out.stdout


async def test_rotation_by_rewriting(setup: Setup) -> None:
    value = b"rotate-me"
    async with transport.channel(setup.server.address) as ch:
        await Client(ch).create("secrets", _secret("rot", value), "default")
        await Client(ch).create("secrets", _secret("rot-kubectl", value), "default")
    raw_key = b"/registry/secrets/default/rot"
    assert (await _raw(setup, raw_key)).startswith(b"k8s:enc:aesgcm:v1:key1:")
    setup.with_config(_config(("key2", KEY2), ("key1", KEY1)))  # a new key first
    async with transport.channel(setup.server.address) as ch:
        c = Client(ch)
        got = unpack((await c.get("secrets", "rot", "default")).object, core_pb2.Secret)
        assert got.data["password"] == value
        # An update that changes nothing still rewrites a value of an older key.
        again = await c.update("secrets", got)
        assert unpack(again.object, core_pb2.Secret).metadata.resource_version != (
            got.metadata.resource_version
        )
        assert (await _raw(setup, raw_key)).startswith(b"k8s:enc:aesgcm:v1:key2:")
        # Now nothing changed and it is the first key's: no write.
        current = unpack(again.object, core_pb2.Secret)
        same = await c.update("secrets", current)
        assert same.object == again.object
    # Kubernetes' recipe: every Secret read and replaced unchanged, re-encrypted with key2.
    listed = await asyncio.to_thread(setup.rest.kubectl, "get", "secrets", "-A", "-o", "json")
    await asyncio.to_thread(setup.rest.kubectl, "replace", "-f", "-", stdin=listed)
    for name in ("rot", "rot-kubectl"):
        raw = await _raw(setup, b"/registry/secrets/default/" + name.encode())
        assert raw.startswith(b"k8s:enc:aesgcm:v1:key2:"), name
    # The same with `k8semu secrets rewrite`, to a secretbox key put first.
    box = {"secretbox": {"keys": [{"name": "box1", "secret": base64.b64encode(KEY1).decode()}]}}
    doc = yaml.safe_load(_config(("key2", KEY2), identity=False))
    doc["resources"][0]["providers"].insert(0, box)
    setup.with_config(yaml.safe_dump(doc))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "k8semu", "secrets", "rewrite", "-A", "-s", setup.server.address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "secret/default/rot rewritten" in done.stdout, done
    for name in ("rot", "rot-kubectl"):
        raw = await _raw(setup, b"/registry/secrets/default/" + name.encode())
        assert raw.startswith(b"k8s:enc:secretbox:v1:box1:"), name
    doc["resources"][0]["providers"] = [box]  # the aesgcm keys retired
    setup.with_config(yaml.safe_dump(doc))
    async with transport.channel(setup.server.address) as ch:
        got = unpack((await Client(ch).get("secrets", "rot", "default")).object, core_pb2.Secret)
    assert got.data["password"] == value


async def test_a_key_the_server_lacks_is_an_error_naming_the_object(setup: Setup) -> None:
    setup.with_config(_config(("key1", KEY1), identity=False))
    try:
        async with transport.channel(setup.server.address) as ch:
            c = Client(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await c.get("secrets", "rot", "default")
            assert info.value.code() == grpc.StatusCode.INTERNAL
            details = info.value.details() or ""
            assert 'unable to transform key "/registry/secrets/default/rot"' in details, details
            assert "k8s:enc:secretbox:v1:box1" in details  # what it was written with
            # A list (from the watch cache) names the object too, and does not hang.
            with pytest.raises(grpc.aio.AioRpcError) as listed:
                await c.list("secrets", "default")
            details = listed.value.details() or ""
            assert 'unable to transform key "/registry/secrets/default/' in details, details
            # The server keeps serving everything else.
            await c.get("namespaces", "default")
        out = await asyncio.to_thread(_get_cli, setup, "secret", "rot")
        assert out.returncode != 0 and "/registry/secrets/default/rot" in out.stderr, out
    finally:
        setup.with_config(_config(("key2", KEY2), ("key1", KEY1)))
