"""Load the eBPF target's artifacts (``OUT/ebpf/*.json``) into the TC datapath of a kernel testbed.

The artifacts are read as files, not compiler objects (DESIGN.md §1: the verifier never trusts
the compiler's memory): ``endpoints.json``, ``ipcache.json`` and one ``cilium_policy_v2_<EPID>.json``
per endpoint, each map file in ``bpftool map dump -j`` shape, whose byte arrays go into the
kernel unchanged. Loading (:class:`EbpfDatapath`):

1. ``bpftool prog loadall policy.bpf.o <bpffs>/progs pinmaps <bpffs>/maps`` (one object: the two
   programs and the shared maps; :mod:`verifier.kernel.bpf` builds it and owns the bpffs);
2. one ``bpftool batch file``: ipcache entries, endpoint-table entries, and per endpoint a fresh
   LPM map (``<bpffs>/policy/cilium_policy_v2_<EPID>``, the datapath's inner-map template: 16384
   entries, ``BPF_F_NO_PREALLOC``) filled with its entries and stored in the map-in-map under its EPID;
3. ``tc qdisc add dev vN clsact`` + ``tc filter add dev vN ingress|egress bpf da object-pinned …``
   on every endpoint's node-side veth, inside the testbed's node namespace.

:func:`load_ebpf` does all three for a :class:`~verifier.kernel.Testbed` and undoes them on exit;
the testbed's own cleanup (also on SIGINT/SIGTERM) unmounts the run's bpffs too.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.kernel import bpf_layout as layout
from verifier.kernel.bpf import (
    BpfFs,
    BpfToolError,
    bpftool,
    bpftool_batch,
    build_object,
    cleanup_stale_bpffs,
    hex_words,
    map_dump,
)
from verifier.kernel.testbed import Testbed

Entries = tuple[tuple[bytes, bytes], ...]

#: Counter slots of ``netpolc_counters`` (policy.bpf.c): reason code -> name. Codes >= 128 are
#: Cilium's drop reasons (reference/cilium.md §6.5).
COUNTER_NAMES: Mapping[int, str] = {
    1: "allowed",
    2: "redirected",
    3: "ct-established",
    4: "ct-reply",
    5: "pass-non-ip",
    6: "pass-ipv6-link-local",
    7: "drop-unknown-endpoint",
    8: "drop-malformed",
    133: "POLICY_DENIED",
    157: "IP_FRAGMENTATION_NOT_SUPPORTED",
    181: "POLICY_DENY",
    189: "AUTH_REQUIRED",
    203: "DROP_EP_NOT_READY",
}
#: ``netpolc_config`` bit: never create conntrack entries (benchmarks).
CONFIG_NO_CT_CREATE = 0x1


class EbpfArtifactError(ValueError):
    """The eBPF artifacts are malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class EndpointRecord:
    """One element of ``endpoints.json``."""

    id: int
    namespace: str
    name: str
    ips: tuple[str, ...]
    identity: int
    policy_map: str
    ingress_enforced: bool
    egress_enforced: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class EbpfArtifacts:
    """The endpoint table, the ipcache and every endpoint's policy map, as raw bytes."""

    endpoints: tuple[EndpointRecord, ...]
    ipcache: Entries
    policy_maps: Mapping[str, Entries] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> EbpfArtifacts:
        """Read ``DIR/ebpf/`` (or ``DIR`` itself when it holds ``endpoints.json``)."""
        base = directory / "ebpf" if (directory / "ebpf" / "endpoints.json").exists() else directory
        endpoints_file = base / "endpoints.json"
        if not endpoints_file.exists():
            raise EbpfArtifactError(f"{directory}: no endpoints.json (expected `netpolc compile --target ebpf` output)")
        endpoints = _load_json(endpoints_file)
        ipcache = _load_json(base / "ipcache.json")
        if not isinstance(endpoints, list):
            raise EbpfArtifactError(f"{endpoints_file}: expected a list of endpoints")
        records = [_endpoint(item, f"{endpoints_file} entry {i}") for i, item in enumerate(endpoints)]
        policies = {r.policy_map: _load_json(base / f"{r.policy_map}.json") for r in records}
        return cls.from_json(endpoints, ipcache, policies, origin=str(base))

    @classmethod
    def from_json(
        cls, endpoints: Any, ipcache: Any, policy_maps: Mapping[str, Any], *, origin: str = "<memory>"
    ) -> EbpfArtifacts:
        """Validate parsed JSON documents (the same shapes as the files)."""
        if not isinstance(endpoints, list):
            raise EbpfArtifactError(f"{origin}/endpoints.json: expected a list of endpoints")
        records = tuple(_endpoint(item, f"{origin}/endpoints.json entry {i}") for i, item in enumerate(endpoints))
        seen: dict[int, str] = {}
        for r in records:
            if r.id in seen:
                raise EbpfArtifactError(f"{origin}/endpoints.json: endpoint ID {r.id} used by {seen[r.id]} and {r.key}")
            seen[r.id] = r.key
        maps = {}
        for r in records:
            if r.policy_map not in policy_maps:
                raise EbpfArtifactError(f"{origin}: no {r.policy_map}.json for endpoint {r.key}")
            maps[r.policy_map] = _entries(
                policy_maps[r.policy_map],
                f"{origin}/{r.policy_map}.json",
                layout.POLICY_KEY_SIZE,
                layout.POLICY_ENTRY_SIZE,
            )
            if len(maps[r.policy_map]) > layout.POLICY_MAP_SIZE:
                raise EbpfArtifactError(
                    f"{origin}/{r.policy_map}.json: {len(maps[r.policy_map])} entries for {r.key}, the policy map "
                    f"holds {layout.POLICY_MAP_SIZE} (the kernel would answer E2BIG, reference/cilium.md §1.8)"
                )
        entries = _entries(ipcache, f"{origin}/ipcache.json", layout.IPCACHE_KEY_SIZE, layout.IPCACHE_VALUE_SIZE)
        return cls(records, entries, maps)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EbpfArtifactError(f"{path}: missing") from None
    except json.JSONDecodeError as err:
        raise EbpfArtifactError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def _endpoint(item: Any, where: str) -> EndpointRecord:
    if not isinstance(item, dict):
        raise EbpfArtifactError(f"{where}: expected an object")
    try:
        record = EndpointRecord(
            id=int(item["id"]),
            namespace=str(item["namespace"]),
            name=str(item["name"]),
            ips=tuple(str(ip) for ip in item["ips"]),
            identity=int(item["identity"]),
            policy_map=str(item["policy_map"]),
            ingress_enforced=bool(item["ingress_enforced"]),
            egress_enforced=bool(item["egress_enforced"]),
        )
    except KeyError as err:
        raise EbpfArtifactError(f"{where}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise EbpfArtifactError(f"{where}: {err}") from None
    if not 0 < record.id < 1 << 16:
        raise EbpfArtifactError(f"{where}: endpoint ID {record.id} outside 1-65535")
    if record.policy_map != f"cilium_policy_v2_{record.id:05d}":
        raise EbpfArtifactError(f"{where}: policy_map {record.policy_map!r} is not cilium_policy_v2_{record.id:05d}")
    for ip in record.ips:
        try:
            layout.endpoint_key(ip)
        except ValueError as err:
            raise EbpfArtifactError(f"{where}: {err}") from None
    return record


def _entries(doc: Any, where: str, key_size: int, value_size: int) -> Entries:
    if not isinstance(doc, list):
        raise EbpfArtifactError(f'{where}: expected a list of {{"key": [...], "value": [...]}} (bpftool -j dump)')
    out = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise EbpfArtifactError(f"{where} entry {i}: expected an object")
        try:
            key = layout.parse_hex_list(item.get("key"), "key")
            value = layout.parse_hex_list(item.get("value"), "value")
        except ValueError as err:
            raise EbpfArtifactError(f"{where} entry {i}: {err}") from None
        if len(key) != key_size or len(value) != value_size:
            raise EbpfArtifactError(
                f"{where} entry {i}: key/value have {len(key)}/{len(value)} bytes, expected {key_size}/{value_size}"
            )
        out.append((key, value))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise EbpfArtifactError(f"{where}: duplicate keys")
    return tuple(out)


class EbpfDatapath:
    """The TC datapath's programs and maps pinned in one run's bpffs (see module doc)."""

    def __init__(self, fs: BpfFs, obj: Path | None = None, *, name: str = "") -> None:
        """Pins go to ``<bpffs>/`` (or ``<bpffs>/<name>/``, so several datapaths can share one bpffs)."""
        self.fs = fs
        self.obj = obj or build_object()
        self.root = fs.path / name if name else fs.path
        self.maps = self.root / "maps"
        self.progs = self.root / "progs"
        self.policy_dir = self.root / "policy"
        self.loaded = False

    @property
    def from_endpoint(self) -> Path:
        """Program for tc ingress of an endpoint's node-side veth: the endpoint's egress policy."""
        return self.progs / "from_endpoint"

    @property
    def to_endpoint(self) -> Path:
        """Program for tc egress of an endpoint's node-side veth: the endpoint's ingress policy."""
        return self.progs / "to_endpoint"

    def load_programs(self) -> None:
        """Load the object once: both programs and the shared (empty) maps, pinned."""
        if self.loaded:
            return
        self.root.mkdir(exist_ok=True)
        bpftool(["prog", "loadall", str(self.obj), str(self.progs), "pinmaps", str(self.maps)])
        self.policy_dir.mkdir(exist_ok=True)
        self.loaded = True

    def load(self, artifacts: EbpfArtifacts) -> None:
        """Fill the maps with the artifacts' bytes (programs first if needed)."""
        self.load_programs()
        lines = self.ipcache_lines(artifacts.ipcache)
        for ep in artifacts.endpoints:
            lines += self.endpoint_lines(ep)
            lines += self.policy_map_lines(ep.id, artifacts.policy_maps[ep.policy_map])
        with tempfile.TemporaryDirectory(prefix="netpolc-bpf-") as tmp:
            bpftool_batch(lines, Path(tmp))

    def ipcache_lines(self, entries: Entries) -> list[str]:
        path = self.maps / "cilium_ipcache_v2"
        return [f"map update pinned {path} key {hex_words(k)} value {hex_words(v)}" for k, v in entries]

    def endpoint_lines(self, ep: EndpointRecord) -> list[str]:
        path = self.maps / "netpolc_endpoints"
        value = layout.endpoint_value(
            ep.id, ep.identity, ingress_enforced=ep.ingress_enforced, egress_enforced=ep.egress_enforced
        )
        return [
            f"map update pinned {path} key {hex_words(layout.endpoint_key(ip))} value {hex_words(value)}"
            for ip in ep.ips
        ]

    def policy_map_lines(self, epid: int, entries: Entries, *, create: bool = True) -> list[str]:
        """Create ``cilium_policy_v2_<EPID>``, fill it, and hang it into the map-in-map under the EPID."""
        path = self.policy_dir / f"cilium_policy_v2_{epid:05d}"
        lines = []
        if create:
            # Kernel map names hold 15 characters; the pin keeps Cilium's full name.
            lines.append(
                f"map create {path} type lpm_trie key {layout.POLICY_KEY_SIZE} value {layout.POLICY_ENTRY_SIZE} "
                f"entries {layout.POLICY_MAP_SIZE} name netpolc_p{epid:05d} flags 1"
            )
        lines += [f"map update pinned {path} key {hex_words(k)} value {hex_words(v)}" for k, v in entries]
        if create:
            outer = self.maps / "netpolc_policy_maps"
            lines.append(f"map update pinned {outer} key {hex_words(layout.epid_key(epid))} value pinned {path}")
        return lines

    def set_config(self, flags: int) -> None:
        """Set ``netpolc_config[0]`` (:data:`CONFIG_NO_CT_CREATE`)."""
        key = hex_words(bytes(4)).split()
        value = hex_words(flags.to_bytes(4, "little")).split()
        bpftool(["map", "update", "pinned", str(self.maps / "netpolc_config"), "key", *key, "value", *value])

    def counters(self) -> dict[str, int]:
        """Non-zero counters by name (:data:`COUNTER_NAMES`; unknown slots as ``reason-<n>``)."""
        out = {}
        for key, value in map_dump(self.maps / "netpolc_counters"):
            slot = int.from_bytes(key, "little")
            count = int.from_bytes(value, "little")
            if count:
                out[COUNTER_NAMES.get(slot, f"reason-{slot}")] = count
        return out

    def clear_conntrack(self) -> None:
        """Forget every tracked connection (so a new probe round meets the policy again)."""
        path = self.maps / "netpolc_ct"
        lines = [f"map delete pinned {path} key {hex_words(k)}" for k, _ in map_dump(path)]
        with tempfile.TemporaryDirectory(prefix="netpolc-bpf-") as tmp:
            bpftool_batch(lines, Path(tmp))

    # --- attaching to a testbed -----------------------------------------------------------

    def attach(self, testbed: Testbed, endpoints: Sequence[EndpointRecord]) -> list[str]:
        """Attach both programs to every endpoint's node-side veth; return the interface names.

        Every endpoint the testbed built must have an entry in ``endpoints`` (else its traffic
        would bypass policy unnoticed); endpoints without a veth (host network) are skipped.
        """
        by_key = {ep.key: ep for ep in endpoints}
        lines: list[str] = []
        devices = []
        for key, site in sorted(testbed.topology.endpoints.items()):
            if site.node_ifname is None or site.netns == testbed.node_netns:
                continue
            if key not in by_key:
                raise BpfToolError(
                    f"testbed endpoint {key} has no entry in endpoints.json: its traffic would bypass policy"
                )
            dev = site.node_ifname
            devices.append(dev)
            lines += [
                f"qdisc add dev {dev} clsact",
                f"filter add dev {dev} ingress bpf da object-pinned {self.from_endpoint}",
                f"filter add dev {dev} egress bpf da object-pinned {self.to_endpoint}",
            ]
        if lines:
            testbed.node_exec(["tc", "-batch", "-"], input="\n".join(lines) + "\n")
        return devices

    @staticmethod
    def detach(testbed: Testbed, devices: Sequence[str]) -> None:
        """Remove the clsact qdiscs (and with them the filters); missing devices are ignored."""
        if devices:
            text = "".join(f"qdisc del dev {dev} clsact\n" for dev in devices)
            testbed.node_exec(["tc", "-force", "-batch", "-"], input=text, check=False)


@contextlib.contextmanager
def load_ebpf(testbed: Testbed, artifacts: Path | EbpfArtifacts) -> Iterator[EbpfDatapath]:
    """Load artifacts (a compile output directory or :class:`EbpfArtifacts`) into a built testbed.

    Pins live in ``/run/netpolc-bpf/<testbed run id>``; leaving the block detaches the programs
    and unmounts it, and so does the testbed's cleanup if the process is interrupted first.
    """
    data = artifacts if isinstance(artifacts, EbpfArtifacts) else EbpfArtifacts.read(artifacts)
    cleanup_stale_bpffs()  # what SIGKILLed runs left behind
    fs = BpfFs(testbed.run_id)
    testbed.add_cleanup(fs.close)
    devices: list[str] = []
    try:
        fs.mount()
        datapath = EbpfDatapath(fs)
        datapath.load(data)
        devices = datapath.attach(testbed, data.endpoints)
        yield datapath
    finally:
        EbpfDatapath.detach(testbed, devices)
        fs.close()
