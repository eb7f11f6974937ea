"""Reading the eBPF artifacts for the kernel datapath: Cilium byte layouts, and clear errors for bad files.

No kernel needed: these check :mod:`verifier.kernel.bpf_layout` against reference/cilium.md
§1.2/§1.4/§2 and that :class:`~verifier.kernel.load_ebpf.EbpfArtifacts` names the file and
entry of anything it cannot load, instead of failing inside bpftool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from verifier.kernel import bpf_layout as L
from verifier.kernel.load_ebpf import EbpfArtifactError, EbpfArtifacts

# --- layouts (reference/cilium.md) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # identity      dir    proto port prefix -> bytes (prefixlen LE, identity LE, egress, proto, port BE)
        ((1042, True, 6, 8080, None), "40000000" + "12040000" + "01" + "06" + "1f90"),
        ((0, False, 17, 0, None), "30000000" + "00000000" + "00" + "11" + "0000"),
        ((7, True, 0, 0, None), "28000000" + "07000000" + "01" + "00" + "0000"),
        ((7, False, 6, 80, 13), "3d000000" + "07000000" + "00" + "06" + "0050"),
    ],
)
def test_policy_key_is_cilium_1_18_struct_policy_key(key: tuple[Any, ...], expected: str) -> None:
    assert L.policy_key(*key).hex() == expected
    assert len(L.policy_key(*key)) == L.POLICY_KEY_SIZE == 12


def test_policy_entry_packs_proxy_port_big_endian_and_deny_with_prefix_in_the_flags_byte() -> None:
    assert L.policy_entry(prefix=24, proxy_port=15001, priority=27).hex() == "3a99" + "c0" + "00" + "1b" + "00" + "0000"
    assert L.policy_entry(prefix=8, deny=True).hex() == "0000" + "41" + "00" + "00" + "00" + "0000"
    view = L.PolicyEntryView.decode(L.policy_entry(prefix=13, proxy_port=80, priority=1))
    assert (view.proxy_port, view.deny, view.prefix, view.priority) == (80, False, 13, 1)


def test_deny_entries_carry_no_redirect_and_the_protocol_wildcards_the_port_too() -> None:
    with pytest.raises(ValueError, match="deny entries"):
        L.policy_entry(prefix=24, deny=True, proxy_port=1)
    with pytest.raises(ValueError, match="wildcarded together"):
        L.policy_key(1, True, 0, 80)


def test_ipcache_key_and_value_are_24_bytes_with_static_prefix_32() -> None:
    key = L.ipcache_key("10.9.0.0/16")
    assert key.hex() == "30000000" + "0000" + "00" + "01" + "0a090000" + "00" * 12
    assert L.ipcache_key("fd00::1")[:8].hex() == "a0000000" + "0000" + "00" + "02"
    value = L.ipcache_value(1 << 24 | 5)
    assert len(value) == L.IPCACHE_VALUE_SIZE == 24 and value[:4].hex() == "05000001"


# --- artifact files -------------------------------------------------------------------------------


def _endpoint(epid: int = 7, **overrides: Any) -> dict[str, Any]:
    record = {
        "id": epid,
        "namespace": "ns",
        "name": f"p{epid}",
        "ips": ["10.0.0.7"],
        "identity": 1000,
        "policy_map": f"cilium_policy_v2_{epid:05d}",
        "ingress_enforced": True,
        "egress_enforced": False,
    }
    record.update(overrides)
    return record


def _entry() -> dict[str, Any]:
    key = L.policy_key(0, True)
    return L.dump_entry(key, L.policy_entry(prefix=0))


def _write(tmp_path: Path, endpoints: Any, policy: Any, ipcache: Any = ()) -> Path:
    ebpf = tmp_path / "ebpf"
    ebpf.mkdir()
    (ebpf / "endpoints.json").write_text(json.dumps(endpoints))
    (ebpf / "ipcache.json").write_text(json.dumps(list(ipcache)))
    (ebpf / "cilium_policy_v2_00007.json").write_text(json.dumps(policy))
    return tmp_path


def test_reads_a_compile_output_directory_byte_for_byte(tmp_path: Path) -> None:
    cache = [L.dump_entry(L.ipcache_key("10.0.0.7"), L.ipcache_value(1000))]
    data = EbpfArtifacts.read(_write(tmp_path, [_endpoint()], [_entry()], cache))
    assert data.endpoints[0].key == "ns/p7" and data.endpoints[0].ips == ("10.0.0.7",)
    assert data.policy_maps["cilium_policy_v2_00007"] == ((L.policy_key(0, True), L.policy_entry(prefix=0)),)
    assert data.ipcache == ((L.ipcache_key("10.0.0.7"), L.ipcache_value(1000)),)


@pytest.mark.parametrize(
    ("endpoints", "policy", "message"),
    [
        ([_endpoint()], [{"key": ["0x00"] * 11, "value": ["0x00"] * 8}], r"entry 0: key/value have 11/8 bytes"),
        ([_endpoint()], [{"key": ["zz"] * 12, "value": ["0x00"] * 8}], r"entry 0: key: 'zz' is not"),
        ([_endpoint()], [_entry(), _entry()], r"duplicate keys"),
        ([_endpoint(policy_map="cilium_policy_v2_7")], [], r"is not cilium_policy_v2_00007"),
        ([_endpoint(ips=["10.0.0.0/24"])], [], r"must be a single address"),
        ([{"id": 7}], [], r"missing field 'namespace'"),
        ([_endpoint(), _endpoint(name="other")], [], r"endpoint ID 7 used by ns/p7 and ns/other"),
        ({"id": 7}, [], r"expected a list of endpoints"),
    ],
)
def test_malformed_artifacts_are_reported_with_file_and_entry(
    tmp_path: Path, endpoints: Any, policy: Any, message: str
) -> None:
    with pytest.raises(EbpfArtifactError, match=message) as err:
        EbpfArtifacts.read(_write(tmp_path, endpoints, policy))
    assert str(tmp_path) in str(err.value)


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [_endpoint()], [])
    (path / "ebpf" / "ipcache.json").write_text("[\n{,\n]")
    with pytest.raises(EbpfArtifactError, match=r"ipcache.json:2: invalid JSON"):
        EbpfArtifacts.read(path)


def test_a_policy_map_over_16384_entries_is_refused_as_the_kernel_would_with_e2big() -> None:
    entries = [
        L.dump_entry(L.policy_key(256 + i, True, 6, 80), L.policy_entry(prefix=24))
        for i in range(L.POLICY_MAP_SIZE + 1)
    ]
    with pytest.raises(EbpfArtifactError, match=r"16385 entries for ns/p7, the policy map holds 16384"):
        EbpfArtifacts.from_json([_endpoint()], [], {"cilium_policy_v2_00007": entries})


def test_a_missing_directory_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(
        EbpfArtifactError, match=r"no endpoints.json \(expected `netpolc compile --target ebpf` output\)"
    ):
        EbpfArtifacts.read(tmp_path)
