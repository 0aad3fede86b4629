"""The cluster zone (``cluster.local``) answered from Service and Endpoints informers.

Names, as Kubernetes' DNS specification has them (read-only view of the cache; answers use
whatever the informers hold at the moment):

- ``SVC.NS.svc.ZONE`` A/AAAA: the ClusterIP(s); headless (clusterIP None): the ready endpoint
  addresses. SRV: one record per port (target the service name, or each endpoint's name).
- ``_PORT._PROTO.SVC.NS.svc.ZONE`` SRV for a named port (``_http._tcp``).
- ``HOST.SVC.NS.svc.ZONE`` for a headless service's endpoint: its hostname, or its IP with
  dashes (``10-1-2-3``).
- ``A-B-C-D.NS.pod.ZONE`` A -> that IP (CoreDNS' "pods insecure").

Unknown names are NXDOMAIN; a name that exists without the asked type is NODATA (NOERROR with
the SOA); before the informers' first list, SERVFAIL.
"""

from __future__ import annotations

import ipaddress

from k8semu.client import Informer
from k8semu.images import _dnswire as w
from k8semu.images._zones import DEFAULT_TTL, Answer, soa_record
from k8semu.pb.api.v1 import core_pb2

_Ready = tuple[core_pb2.EndpointAddress, list[core_pb2.EndpointPort]]


def _ip_rr(name: str, ip: str, ttl: int, qtype: int) -> w.RR | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    rtype = w.A if addr.version == 4 else w.AAAA
    if qtype not in (rtype, w.ANY):
        return None
    return w.RR(name, rtype, ttl, str(addr))


def dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


class KubernetesZone:
    def __init__(
        self,
        origin: str,
        services: Informer[core_pb2.Service],
        endpoints: Informer[core_pb2.Endpoints],
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.origin = w.normalize(origin)
        self.services = services
        self.endpoints = endpoints
        self.ttl = ttl
        self.soa = soa_record(self.origin, ttl)

    @property
    def synced(self) -> bool:
        return self.services.has_synced() and self.endpoints.has_synced()

    def answer(self, q: w.Question) -> Answer:
        if not self.synced:
            return Answer(rcode=w.SERVFAIL)
        rel = q.name[: -len(self.origin) - 1] if q.name != self.origin else ""
        labels = rel.split(".") if rel else []
        if not labels:
            if q.qtype in (w.SOA, w.ANY):
                return Answer(answers=[self.soa])
            if q.qtype == w.NS:
                return Answer(answers=[w.RR(self.origin, w.NS, self.ttl, self.soa.data[0])])  # type: ignore[index]
            return self._nodata()
        kind = labels[-1]
        if kind == "svc":
            return self._service_names(q, labels[:-1])
        if kind == "pod" and len(labels) == 3:
            return self._pod(q, labels[0])
        if kind in ("svc", "pod") and len(labels) <= 2:
            return self._nodata()
        return self._nxdomain()

    # helpers

    def _nodata(self) -> Answer:
        return Answer(authority=[self.soa])

    def _nxdomain(self) -> Answer:
        return Answer(rcode=w.NXDOMAIN, authority=[self.soa])

    def _pod(self, q: w.Question, label: str) -> Answer:
        text = label.replace("-", ".")
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return self._nxdomain()
        rr = _ip_rr(q.name, text, self.ttl, q.qtype)
        return Answer(answers=[rr]) if rr else self._nodata()

    def _service_names(self, q: w.Question, labels: list[str]) -> Answer:
        # labels: [] svc, [ns], [svc, ns], [host, svc, ns], [_port, _proto, svc, ns]
        if len(labels) <= 1:
            if not labels or any(
                s.metadata.namespace == labels[0] for s in self.services.cache.list()
            ):
                return self._nodata()
            return self._nxdomain()
        namespace, service_name = labels[-1], labels[-2]
        svc = self.services.cache.get_by_name(service_name, namespace)
        if svc is None:
            return self._nxdomain()
        svc_fqdn = f"{service_name}.{namespace}.svc.{self.origin}"
        headless = svc.spec.cluster_ip in ("None", "")
        if len(labels) == 2:
            return self._service(q, svc, svc_fqdn, headless)
        if len(labels) == 3:
            return self._endpoint_host(q, labels[0], service_name, namespace, svc_fqdn)
        if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv(q, svc, svc_fqdn, headless, labels[0][1:], labels[1][1:])
        return self._nxdomain()

    def _ready_addresses(self, name: str, namespace: str) -> list[_Ready]:
        eps = self.endpoints.cache.get_by_name(name, namespace)
        if eps is None:
            return []
        return [(a, list(s.ports)) for s in eps.subsets for a in s.addresses]

    def _service(self, q: w.Question, svc: core_pb2.Service, fqdn: str, headless: bool) -> Answer:
        out = Answer()
        ns = svc.metadata.namespace
        if q.qtype == w.SRV:
            return self._srv(q, svc, fqdn, headless, None, None)
        if headless:
            ips = [a.ip for a, _ in self._ready_addresses(svc.metadata.name, ns)]
        else:
            ips = list(svc.spec.cluster_ips) or [svc.spec.cluster_ip]
        for ip in dict.fromkeys(ips):
            rr = _ip_rr(q.name, ip, self.ttl, q.qtype)
            if rr is not None:
                out.answers.append(rr)
        if not out.answers:
            out.authority.append(self.soa)
        return out

    def _endpoint_host(self, q: w.Question, host: str, name: str, ns: str, svc_fqdn: str) -> Answer:
        for addr, _ in self._ready_addresses(name, ns):
            if host in (addr.hostname, dashed(addr.ip)):
                rr = _ip_rr(q.name, addr.ip, self.ttl, q.qtype)
                return Answer(answers=[rr]) if rr else self._nodata()
        return self._nxdomain()

    def _srv(
        self,
        q: w.Question,
        svc: core_pb2.Service,
        fqdn: str,
        headless: bool,
        port_name: str | None,
        proto: str | None,
    ) -> Answer:
        if q.qtype not in (w.SRV, w.ANY):
            # _port._proto names exist only for SRV.
            return self._nodata() if self._srv_ports(svc, port_name, proto) else self._nxdomain()
        out = Answer()
        ports = self._srv_ports(svc, port_name, proto)
        if not ports:
            return self._nxdomain() if port_name is not None else self._nodata()
        if not headless:
            ips = list(svc.spec.cluster_ips) or [svc.spec.cluster_ip]
            for port in ports:
                out.answers.append(w.RR(q.name, w.SRV, self.ttl, (0, 100, port.port, fqdn)))
            for ip in ips:
                rr = _ip_rr(fqdn, ip, self.ttl, w.ANY)
                if rr is not None:
                    out.additional.append(rr)
            return out
        ready = self._ready_addresses(svc.metadata.name, svc.metadata.namespace)
        weight = max(1, 100 // max(1, len(ready)))
        for addr, ep_ports in ready:
            target = f"{addr.hostname or dashed(addr.ip)}.{fqdn}"
            for port in ports:
                ep_port = next((p.port for p in ep_ports if p.name == port.name), None)
                if ep_port is None:
                    continue
                out.answers.append(w.RR(q.name, w.SRV, self.ttl, (0, weight, ep_port, target)))
            rr = _ip_rr(target, addr.ip, self.ttl, w.ANY)
            if rr is not None:
                out.additional.append(rr)
        if not out.answers:
            out.authority.append(self.soa)
        return out

    @staticmethod
    def _srv_ports(
        svc: core_pb2.Service, port_name: str | None, proto: str | None
    ) -> list[core_pb2.ServicePort]:
        out = []
        for port in svc.spec.ports:
            protocol = (port.protocol or "TCP").lower()
            if port_name is not None and (port.name.lower() != port_name or protocol != proto):
                continue
            out.append(port)
        return out
