"""The resource verbs over HTTP: each builds the verb's request and calls the one API
(`service.APIServicer`, the gRPC face's verbs too), then answers Kubernetes JSON.

Query parameters and bodies are checked before the verb runs, so a bad request (400, 415,
413) writes nothing; the verb's own errors become metav1.Status in the server's middleware.
Patches go through the Patch verb with the request's media type as the patch type, so every
patch type `patch.py` applies is served here without a change.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from multidict import MultiMapping

from k8semu.api import manifest
from k8semu.apiserver import patch
from k8semu.apiserver.errors import Conflict, NotFound
from k8semu.apiserver.objects import meta, pack, parse_resource_version
from k8semu.apiserver.rest import codec, paths, tables
from k8semu.apiserver.rest.codec import Wanted, bad_request
from k8semu.apiserver.rest.paths import Target
from k8semu.apiserver.rest.status import HTTPError, success
from k8semu.apiserver.service import APIServicer
from k8semu.pb.api.v1 import apiserver_pb2 as api

_MATCHES = ("", "Exact", "NotOlderThan")
_POLICIES = ("", "Orphan", "Background", "Foreground")
# Writes of a patch to a converted object (`_patch_converted`) before a conflict is answered.
_PATCH_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler answers: a status code, a JSON document (or its encoding) and
    `Warning` headers."""

    code: int
    body: Any
    warnings: tuple[str, ...] = ()


def _int(query: MultiMapping[str], name: str, default: int = 0) -> int:
    text = query.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"{name}: invalid value {text!r}: must be an integer") from None


def _bool(query: MultiMapping[str], name: str) -> bool:
    return query.get(name, "").lower() in ("1", "true")


def dry_run(query: MultiMapping[str]) -> bool:
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _unpacked(packed: Any, kind_message: type[Message]) -> Message:
    obj = kind_message()
    packed.Unpack(obj)
    return obj


class Resources:
    """The handlers of one server; `api` is the verbs."""

    def __init__(self, verbs: APIServicer) -> None:
        self.verbs = verbs
        self.encoded = codec.EncodedObjects()

    def _object(self, target: Target, resp: api.ObjectResponse) -> bytes:
        return self.encoded.json(target.kind, resp.object)

    # ---- reads --------------------------------------------------------------------------

    async def get(self, target: Target, query: MultiMapping[str], wanted: Wanted) -> Reply:
        if target.subresource == "scale":
            return Reply(200, await self._scale(target))
        if target.subresource in paths.CREATE_ONLY:
            raise HTTPError(
                405, "MethodNotAllowed", f"pods/{target.subresource} is created, never read"
            )
        req = api.GetRequest(
            **_names(target),
        )
        resp = await self.verbs.Get(req)
        if not wanted.table and not wanted.partial:
            return Reply(200, self.encoded.json(target.kind, resp.object))
        obj = _unpacked(resp.object, target.kind.message)
        if wanted.table:
            include = tables.includes(query.get("includeObject", ""))
            rv = meta(obj).resource_version
            return Reply(
                200, tables.table(target.kind, [obj], include=include, resource_version=rv)
            )
        return Reply(200, tables.partial_metadata(obj))

    async def collection(self, target: Target, query: MultiMapping[str], wanted: Wanted) -> Reply:
        if not wanted.table and not wanted.partial:
            return await self._plain_list(target, query)
        objs, rv, token = await self.list_objects(target, query)
        if wanted.table:
            include = tables.includes(query.get("includeObject", ""))
            return Reply(
                200,
                tables.table(
                    target.kind, objs, include=include, resource_version=rv, continue_token=token
                ),
            )
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if token:
            metadata["continue"] = token
        if wanted.partial:
            return Reply(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": [tables.partial_metadata(o) for o in objs],
                },
            )
        return Reply(200, self.list_document(target, objs, metadata))

    async def _plain_list(self, target: Target, query: MultiMapping[str]) -> Reply:
        """A list as JSON, each item's encoding made once (`EncodedObjects`)."""
        resp = await self._list(target, query)
        metadata = {"resourceVersion": resp.resource_version}
        if token := getattr(resp, "continue"):
            metadata["continue"] = token
        kind = target.kind
        head = {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": metadata}
        items = [self.encoded.json(kind, item) for item in resp.items]
        return Reply(200, codec.list_json(head, items))

    @staticmethod
    def list_document(target: Target, objs: list[Message], metadata: dict[str, Any]) -> Any:
        kind = target.kind
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": [manifest.to_dict(o) for o in objs],
        }

    async def list_objects(
        self, target: Target, query: MultiMapping[str]
    ) -> tuple[list[Message], str, str]:
        """The List verb with the request's selectors, pages and resourceVersion rules:
        (objects, resourceVersion, continue)."""
        resp = await self._list(target, query)
        objs = [_unpacked(item, target.kind.message) for item in resp.items]
        return objs, resp.resource_version, getattr(resp, "continue")

    async def _list(self, target: Target, query: MultiMapping[str]) -> api.ListResponse:
        limit = _int(query, "limit")
        if limit < 0:
            raise bad_request("limit: Invalid value: must be >= 0")
        rv_text = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        if match not in _MATCHES:
            raise bad_request(
                f'resourceVersionMatch: Unsupported value: "{match}": supported values:'
                ' "Exact", "NotOlderThan"'
            )
        if match and not rv_text:
            raise bad_request("resourceVersionMatch: Forbidden: resourceVersion must be set")
        rv = parse_resource_version(rv_text, field="resourceVersion") if rv_text else 0
        if match == "Exact" and rv == 0:
            raise bad_request(
                'resourceVersionMatch: Forbidden: "Exact" needs a resourceVersion > 0'
            )
        token = query.get("continue", "")
        if token and match:
            raise bad_request("continue: Forbidden: not allowed with resourceVersionMatch")
        req = api.ListRequest(
            resource=target.kind.resource,
            namespace=target.namespace,
            label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""),
            limit=limit,
            **{"continue": token},
        )
        resp = await self.verbs.List(req, revision=rv if match == "Exact" else 0)
        if rv and match != "Exact" and resp.resource_version and int(resp.resource_version) < rv:
            raise HTTPError(
                504,
                "Timeout",
                f"Too large resource version: {rv}, current: {resp.resource_version}",
            )
        return resp

    async def _scale(self, target: Target) -> dict[str, Any]:
        req = api.GetRequest(
            **_names(target),
        )
        return _scale_document(await self.verbs.GetScale(req))

    # ---- writes -------------------------------------------------------------------------

    async def create(
        self, target: Target, query: MultiMapping[str], body: Any, user_agent: str = ""
    ) -> Reply:
        if target.subresource == "binding":
            return await self._bind(target, body)
        if target.subresource == "eviction":
            return await self._evict(target, body)
        if target.name or target.subresource:
            raise HTTPError(405, "MethodNotAllowed", "POST is for a collection")
        validation = codec.field_validation(query.get("fieldValidation", ""))
        decoded = codec.decode_object(body, target.kind, validation)
        if target.namespace and not meta(decoded.obj).namespace:
            meta(decoded.obj).namespace = target.namespace
        req = api.CreateRequest(
            resource=target.kind.resource,
            namespace=target.namespace,
            object=pack(decoded.obj),
            field_manager=codec.field_manager(query, user_agent),
        )
        resp = await self.verbs.Create(req, dry_run=dry_run(query))
        return Reply(201, self._object(target, resp), decoded.warnings)

    async def _bind(self, target: Target, body: Any) -> Reply:
        node = body.get("target", {}).get("name", "") if isinstance(body, dict) else ""
        rv = body.get("metadata", {}).get("resourceVersion", "") if isinstance(body, dict) else ""
        req = api.BindRequest(
            namespace=target.namespace, name=target.name, node_name=node, resource_version=rv
        )
        await self.verbs.Bind(req)
        return Reply(201, success({"name": target.name, "kind": target.kind.plural}))

    async def _evict(self, target: Target, body: Any) -> Reply:
        """policy/v1 Eviction: its deleteOptions' grace period and preconditions."""
        options = body.get("deleteOptions") or {} if isinstance(body, dict) else {}
        if not isinstance(options, dict):
            raise HTTPError(400, "BadRequest", "deleteOptions: must be an object")
        pre = options.get("preconditions") or {}
        req = api.EvictRequest(
            namespace=target.namespace,
            name=target.name,
            preconditions=api.Preconditions(
                uid=str(pre.get("uid") or ""),
                resource_version=str(pre.get("resourceVersion") or ""),
            ),
        )
        grace = options.get("gracePeriodSeconds")
        if grace is not None:
            if not isinstance(grace, int) or isinstance(grace, bool):
                raise HTTPError(400, "BadRequest", "deleteOptions.gracePeriodSeconds: an integer")
            req.grace_period_seconds = grace
        await self.verbs.Evict(req)
        return Reply(201, success({"name": target.name, "kind": target.kind.plural}))

    async def update(
        self, target: Target, query: MultiMapping[str], body: Any, user_agent: str = ""
    ) -> Reply:
        if not target.name or target.subresource in paths.CREATE_ONLY:
            raise HTTPError(405, "MethodNotAllowed", "PUT is for one object")
        manager = codec.field_manager(query, user_agent)
        if target.subresource == "scale":
            return await self._update_scale(target, query, body, manager)
        validation = codec.field_validation(query.get("fieldValidation", ""))
        decoded = codec.decode_object(body, target.kind, validation)
        m = meta(decoded.obj)
        if m.name != target.name:
            raise bad_request(
                f"the name of the object ({m.name}) does not match the name on the URL"
                f" ({target.name})"
            )
        if target.kind.namespaced:
            if m.namespace and m.namespace != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on"
                    " the request"
                )
            m.namespace = target.namespace
        req = api.UpdateRequest(
            resource=target.kind.resource, object=pack(decoded.obj), field_manager=manager
        )
        status = target.subresource in paths.STATUS_WRITES
        verb = self.verbs.UpdateStatus if status else self.verbs.Update
        resp = await verb(req, dry_run=dry_run(query), unconditional=True)
        return Reply(200, self._object(target, resp), decoded.warnings)

    async def _update_scale(
        self, target: Target, query: MultiMapping[str], body: Any, manager: str
    ) -> Reply:
        if not isinstance(body, dict):
            raise bad_request("the body must be an autoscaling/v1 Scale")
        replicas = body.get("spec", {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise bad_request("spec.replicas: must be an integer")
        return Reply(
            200,
            await self._set_replicas(
                target,
                replicas,
                body.get("metadata", {}).get("resourceVersion", ""),
                query,
                manager,
            ),
        )

    async def _set_replicas(
        self, target: Target, replicas: int, rv: str, query: MultiMapping[str], manager: str
    ) -> dict[str, Any]:
        req = api.UpdateScaleRequest(
            **_names(target), replicas=replicas, resource_version=rv, field_manager=manager
        )
        return _scale_document(await self.verbs.UpdateScale(req, dry_run=dry_run(query)))

    async def patch(
        self,
        target: Target,
        query: MultiMapping[str],
        raw: bytes,
        content_type: str,
        user_agent: str = "",
    ) -> Reply:
        if not target.name or target.subresource in paths.CREATE_ONLY:
            raise HTTPError(405, "MethodNotAllowed", "PATCH is for one object")
        media = codec.media_type(content_type)
        patch_type = codec.PATCH_TYPES.get(media)
        if patch_type is None:
            raise HTTPError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types"
                f" include: {', '.join(codec.PATCH_TYPES)} (got {media!r})",
            )
        codec.field_validation(query.get("fieldValidation", ""))
        applying = patch_type == "application/apply-patch+yaml"
        manager = codec.field_manager(query, user_agent, apply=applying)
        if target.subresource == "scale":
            return Reply(200, await self._patch_scale(target, query, raw, media, manager))
        if target.served_as is not None and not applying:
            return await self._patch_converted(target, query, raw, patch_type, manager)
        if target.served_as is not None:  # the applied configuration, as the stored version
            raw = codec.dumps(target.served_as.incoming(codec.parse_body(raw, codec.YAML)))
        req = api.PatchRequest(
            resource=target.kind.resource,
            namespace=target.namespace,
            name=target.name,
            patch_type=patch_type,
            patch=raw,
            status=target.subresource in paths.STATUS_WRITES,
            field_manager=manager,
            force=codec.force(query),
        )
        resp = await self.verbs.Patch(req, dry_run=dry_run(query))
        return Reply(201 if resp.created else 200, self._object(target, resp))

    async def _patch_converted(
        self, target: Target, query: MultiMapping[str], raw: bytes, patch_type: str, manager: str
    ) -> Reply:
        """A merge, JSON or strategic patch of an object served at another version
        (versions.py): applied to the object in that version, the result converted back and
        written with the read's resourceVersion; a write that lost a race is tried again
        (unless the patch itself named a resourceVersion), as Kubernetes does."""
        conversion, kind = target.served_as, target.kind
        assert conversion is not None
        parsed = patch.parse(kind, target.name, patch_type, raw)
        precondition = patch.resource_version_precondition(parsed)
        status = target.subresource in paths.STATUS_WRITES
        verb = self.verbs.UpdateStatus if status else self.verbs.Update
        for attempt in range(_PATCH_ATTEMPTS):
            current = await self.verbs.Get(api.GetRequest(**_names(target)))
            served = conversion.outgoing(json.loads(self.encoded.json(kind, current.object)))
            patched = patch.patch_document(kind, target.name, served, parsed)
            if not isinstance(patched, dict) or patched.get("kind") != kind.kind:
                raise HTTPError(422, "Invalid", "the patch must leave an object of the same kind")
            decoded = codec.decode_object(conversion.incoming(patched), kind, "Strict").obj
            m = meta(decoded)
            if (m.name, m.namespace) != (target.name, target.namespace if kind.namespaced else ""):
                raise HTTPError(422, "Invalid", "metadata.name: the patch must not rename")
            req = api.UpdateRequest(
                resource=kind.resource, object=pack(decoded), field_manager=manager
            )
            try:
                resp = await verb(req, dry_run=dry_run(query))
            except Conflict:
                if precondition or attempt == _PATCH_ATTEMPTS - 1:
                    raise
                continue
            return Reply(200, self._object(target, resp))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _patch_scale(
        self, target: Target, query: MultiMapping[str], raw: bytes, media: str, manager: str
    ) -> dict[str, Any]:
        """A merge patch of the Scale (kubectl scale sends one): only spec.replicas changes."""
        if media not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise HTTPError(415, "UnsupportedMediaType", f"scale: {media} patches are not served")
        doc = codec.parse_body(raw, codec.JSON)
        if not isinstance(doc, dict):
            raise bad_request("the patch must be a JSON object")
        current = await self._scale(target)
        merged = patch.merge(current, doc)
        replicas = merged.get("spec", {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise bad_request("spec.replicas: must be an integer")
        rv = doc.get("metadata", {}).get("resourceVersion", "") if doc.get("metadata") else ""
        return await self._set_replicas(target, replicas, rv, query, manager)

    async def delete(self, target: Target, query: MultiMapping[str], body: Any) -> Reply:
        if not target.name or target.subresource:
            raise HTTPError(405, "MethodNotAllowed", "DELETE is for one object or a collection")
        req = _delete_request(target, target.name, query, body)
        resp = await self.verbs.Delete(req, dry_run=dry_run(query))
        obj = _unpacked(resp.object, target.kind.message)
        if meta(obj).HasField("deletion_timestamp") and not dry_run(query):
            return Reply(200, manifest.to_dict(obj))  # still there: finalizers or grace
        details = {"name": target.name, "kind": target.kind.plural, "uid": meta(obj).uid}
        if target.kind.group:
            details["group"] = target.kind.group
        return Reply(200, success(details))

    async def delete_collection(self, target: Target, query: MultiMapping[str], body: Any) -> Reply:
        """Every object the selectors match, deleted one by one with the same options;
        one already gone is skipped. Answers the list of what was deleted."""
        objs, rv, _ = await self.list_objects(target, query)
        deleted: list[Message] = []
        for obj in objs:
            req = _delete_request(target, meta(obj).name, query, body)
            req.namespace = meta(obj).namespace
            try:
                resp = await self.verbs.Delete(req, dry_run=dry_run(query))
            except NotFound:
                continue
            deleted.append(_unpacked(resp.object, target.kind.message))
            await asyncio.sleep(0)  # a long collection does not hold the loop
        return Reply(200, self.list_document(target, deleted, {"resourceVersion": rv}))


def _names(target: Target) -> dict[str, str]:
    """The request fields that name one object."""
    return {"resource": target.kind.resource, "namespace": target.namespace, "name": target.name}


def _delete_request(
    target: Target, name: str, query: MultiMapping[str], body: Any
) -> api.DeleteRequest:
    """DeleteOptions from the body (a JSON DeleteOptions) and the query parameters."""
    options = body if isinstance(body, dict) else {}
    if body is not None and not isinstance(body, dict):
        raise bad_request("the body must be a DeleteOptions object")
    policy = options.get("propagationPolicy") or query.get("propagationPolicy", "")
    if policy not in _POLICIES:
        raise bad_request(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: "Orphan",'
            ' "Background", "Foreground"'
        )
    pre = options.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise bad_request("preconditions: must be an object")
    req = api.DeleteRequest(
        resource=target.kind.resource,
        namespace=target.namespace,
        name=name,
        preconditions=api.Preconditions(
            uid=str(pre.get("uid") or ""), resource_version=str(pre.get("resourceVersion") or "")
        ),
        propagation_policy=policy,
    )
    grace = options.get("gracePeriodSeconds")
    if grace is None and query.get("gracePeriodSeconds", ""):
        grace = _int(query, "gracePeriodSeconds")
    if grace is not None:
        if not isinstance(grace, int) or isinstance(grace, bool):
            raise bad_request("gracePeriodSeconds: must be an integer")
        req.grace_period_seconds = grace
    return req


def _scale_document(scale: api.Scale) -> dict[str, Any]:
    """autoscaling/v1 Scale."""
    metadata = {
        "name": scale.name,
        "namespace": scale.namespace,
        "uid": scale.uid,
        "resourceVersion": scale.resource_version,
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: v for k, v in metadata.items() if v},
        "spec": {"replicas": scale.spec_replicas},
        "status": {"replicas": scale.status_replicas, "selector": scale.selector},
    }
