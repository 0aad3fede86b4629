"""Pod IPs of one node: addresses from the node's podCIDR, one per pod, freed when it is gone.

The network address and the first host address (`.0`, `.1` of a /24: the gateway in a real
cluster) and the broadcast address are never handed out. Allocation walks on round-robin
from the last address given, so an address just freed is the last to be given again (a
client still talking to a deleted pod's IP does not reach its successor at once).

Pure: no I/O. The kubelet decides which CIDR to use (design decision 7).
"""

from __future__ import annotations

import ipaddress

FALLBACK_POD_IP = "127.0.0.1"


class PodCIDRExhausted(RuntimeError):
    """Every address of the node's podCIDR is in use."""


class PodIPAllocator:
    """IPs of one IPv4 network for pods, by pod uid. `reserve` re-takes an IP a pod already had
    (a kubelet restart); `allocate` is idempotent per uid."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.IPv4Network(cidr, strict=True)
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        if self._last < self._first:
            raise ValueError(f"podCIDR {cidr}: too small for pods")
        self._by_uid: dict[str, int] = {}
        self._used: set[int] = set()
        self._next = self._first

    @property
    def size(self) -> int:
        return self._last - self._first + 1

    def __len__(self) -> int:
        return len(self._by_uid)

    def get(self, uid: str) -> str | None:
        ip = self._by_uid.get(uid)
        return None if ip is None else str(ipaddress.IPv4Address(ip))

    def contains(self, ip: str) -> bool:
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self._first <= value <= self._last

    def allocate(self, uid: str) -> str:
        if uid in self._by_uid:
            return str(ipaddress.IPv4Address(self._by_uid[uid]))
        for _ in range(self.size):
            candidate = self._next
            self._next = self._first if self._next >= self._last else self._next + 1
            if candidate not in self._used:
                self._used.add(candidate)
                self._by_uid[uid] = candidate
                return str(ipaddress.IPv4Address(candidate))
        raise PodCIDRExhausted(f"podCIDR {self.network}: all {self.size} pod IPs are in use")

    def reserve(self, uid: str, ip: str) -> bool:
        """Take `ip` for `uid` again; False if it is outside the range or someone else's."""
        if not self.contains(ip):
            return False
        value = int(ipaddress.IPv4Address(ip))
        if self._by_uid.get(uid) == value:
            return True
        if value in self._used:
            return False
        self.release(uid)
        self._used.add(value)
        self._by_uid[uid] = value
        return True

    def release(self, uid: str) -> None:
        value = self._by_uid.pop(uid, None)
        if value is not None:
            self._used.discard(value)
