"""ClusterIP Services in Cilium's load-balancer maps: ``cilium_lb{4,6}_services_v2`` and
``cilium_lb{4,6}_backends_v3`` (bpftool-style JSON in ``OUT/ebpf/``).

Layouts (Cilium bpf/lib/common.h, pkg/maps/lbmap; 1.18):

- service key ``struct lb4_key`` (12 bytes): ``__be32 address; __be16 dport; __u16 backend_slot;
  __u8 proto; __u8 scope; __u8 pad[2]`` (lb6_key: a 16-byte address, 24 bytes);
- service value ``struct lb4_service`` (12 bytes): ``__u32 backend_id; __u16 count;
  __u16 rev_nat_index; __u8 flags; __u8 flags2; __u8 pad[2]``;
- backend key ``__u32 backend_id``; value ``struct lb4_backend`` (12 bytes): ``__be32 address;
  __be16 port; __u8 proto; __u8 flags; __u16 cluster_id; __u8 zone; __u8 pad`` (lb6: 24 bytes).

Each frontend is slot 0 (``count`` = backends, ``backend_id`` 0) plus slots 1..count, each naming a
backend. The datapath (bpf/lib/lb.h ``lb4_local``) looks up slot 0, picks a slot at random for a new
connection and reads that slot's ``backend_id``, then the backend; so a new connection costs three
hash lookups, an established one two (slot 0, then the backend its conntrack entry remembers).
Scope is ``LB_LOOKUP_SCOPE_EXT`` (0): no ``externalTrafficPolicy=Local`` for ClusterIPs. Flags 0: a
ClusterIP not reachable from outside the cluster (``bpf-lb-external-clusterip`` off, the default).
Service and backend IDs count from 1 in frontend order, so they are stable for a given input.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from compiler.services import Frontend
from compiler.targets.ebpf.layout import dump_entry

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
SCOPE_EXT = 0  # LB_LOOKUP_SCOPE_EXT

_KEY = {4: struct.Struct("<4s2sHBB2s"), 6: struct.Struct("<16s2sHBB2s")}  # address, dport (be16), slot, ...
_SERVICE = struct.Struct("<IHHBB2s")  # backend_id, count, rev_nat_index, flags, flags2, pad
_BACKEND = {4: struct.Struct("<4s2sBBHBB"), 6: struct.Struct("<16s2sBBHBB")}  # address, port (be16), proto, ...
_BACKEND_ID = struct.Struct("<I")


@dataclass(frozen=True, order=True)
class ServiceEntry:
    """One ``lb_services`` entry: slot 0 (the frontend) or one backend slot."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    slot: int
    proto: int
    backend_id: int
    count: int
    rev_nat: int

    @property
    def version(self) -> int:
        return self.address.version

    def encode_key(self) -> bytes:
        return _KEY[self.version].pack(self.address.packed, self.port.to_bytes(2, "big"), self.slot, self.proto,
                                       SCOPE_EXT, b"\0\0")

    def encode_value(self) -> bytes:
        return _SERVICE.pack(self.backend_id, self.count, self.rev_nat, 0, 0, b"\0\0")

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> ServiceEntry:
        version = 4 if len(key) == _KEY[4].size else 6
        if len(key) != _KEY[version].size or len(value) != _SERVICE.size:
            raise ValueError(f"lb service key/value must be {_KEY[4].size} or {_KEY[6].size}/{_SERVICE.size} bytes")
        address, port, slot, proto, _scope, _pad = _KEY[version].unpack(key)
        backend_id, count, rev_nat, _flags, _flags2, _ = _SERVICE.unpack(value)
        return cls(ipaddress.ip_address(address), int.from_bytes(port, "big"), slot, proto, backend_id, count, rev_nat)

    def dump(self) -> dict[str, Any]:
        return dump_entry(self.encode_key(), self.encode_value(),
                          {"key": {"address": str(self.address), "dport": self.port, "backend_slot": self.slot,
                                   "proto": self.proto, "scope": SCOPE_EXT},
                           "value": {"backend_id": self.backend_id, "count": self.count,
                                     "rev_nat_index": self.rev_nat, "flags": 0, "flags2": 0}})


@dataclass(frozen=True, order=True)
class BackendEntry:
    """One ``lb_backends`` entry."""

    backend_id: int
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    proto: int

    def encode_key(self) -> bytes:
        return _BACKEND_ID.pack(self.backend_id)

    def encode_value(self) -> bytes:
        return _BACKEND[self.address.version].pack(self.address.packed, self.port.to_bytes(2, "big"), self.proto,
                                                   0, 0, 0, 0)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> BackendEntry:
        version = 4 if len(value) == _BACKEND[4].size else 6
        if len(key) != _BACKEND_ID.size or len(value) != _BACKEND[version].size:
            raise ValueError(f"lb backend key/value must be {_BACKEND_ID.size}/{_BACKEND[4].size} or "
                             f"{_BACKEND[6].size} bytes")
        address, port, proto, _flags, _cluster, _zone, _pad = _BACKEND[version].unpack(value)
        return cls(_BACKEND_ID.unpack(key)[0], ipaddress.ip_address(address), int.from_bytes(port, "big"), proto)

    def dump(self) -> dict[str, Any]:
        return dump_entry(self.encode_key(), self.encode_value(),
                          {"key": self.backend_id,
                           "value": {"address": str(self.address), "port": self.port, "proto": self.proto,
                                     "flags": 0, "cluster_id": 0, "zone": 0}})


def lb_entries(frontends: tuple[Frontend, ...]) -> tuple[list[ServiceEntry], list[BackendEntry]]:
    """The service and backend entries of every frontend with backends."""
    services: list[ServiceEntry] = []
    backend_ids: dict[tuple[object, int, int], int] = {}
    backends: list[BackendEntry] = []
    rev_nat = 0
    for frontend in frontends:
        if not frontend.backends:
            continue
        rev_nat += 1
        proto = PROTOCOL_NUMBERS[frontend.protocol]
        services.append(ServiceEntry(frontend.address, frontend.port, 0, proto, 0, len(frontend.backends), rev_nat))
        for slot, backend in enumerate(frontend.backends, 1):
            key = (backend.address, backend.port, proto)
            if key not in backend_ids:
                backend_ids[key] = len(backend_ids) + 1
                backends.append(BackendEntry(backend_ids[key], backend.address, backend.port, proto))
            services.append(ServiceEntry(frontend.address, frontend.port, slot, proto, backend_ids[key], 0, rev_nat))
    return services, backends


def map_names(version: int) -> tuple[str, str]:
    """The pinned names of the service and backend maps of one family."""
    return f"cilium_lb{version}_services_v2", f"cilium_lb{version}_backends_v3"
