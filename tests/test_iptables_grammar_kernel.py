"""Kernel round trip: load rules + ipsets into a fresh network namespace, read back what the kernel prints.

For each iptables backend on this machine (nf_tables and legacy), the contract files are restored into a
namespace of their own, ``iptables-save`` / ``ipset save`` run inside it, and the parsed save output must equal
the parsed input (same tables, chains, rules, sets) and simulate identically. The namespace is always removed
(a ``finally``; a crashed run's leftovers are named like the testbed's, so ``cleanup_stale`` finds them).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from verifier.artifacts import load_ipsets, load_iptables, read_ipsets, read_iptables
from verifier.artifacts.render import render_ruleset
from verifier.kernel import kernel_unavailable_reason
from verifier.kernel import netns as ns
from verifier.simulate.iptables import IptablesSimulator, Node, Packet

pytestmark = pytest.mark.kernel

DATA = Path(__file__).resolve().parent / "data" / "iptables"
BACKENDS = ("iptables", "iptables-legacy")
NODE = IPv4Address("10.244.0.1")


@pytest.fixture(autouse=True)
def _need_kernel() -> None:
    reason = kernel_unavailable_reason(["iptables-restore", "iptables-save", "ipset"])
    if reason:
        pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace (``npc-<run id>-check``), deleted afterwards whatever happens."""
    run_id = ns.new_run_id()
    name = f"{ns.PREFIX}{run_id}-check"
    ns.claim_run(run_id)
    try:
        ns.add_namespaces([name])
        yield name
    finally:
        ns.delete_namespaces([name], kill=True)
        ns.release_run(run_id)


def restore_and_save(netns: str, backend: str, rules: str, ipsets: str) -> tuple[str, str]:
    """Load ``ipsets`` then ``rules`` into ``netns`` with ``backend``; what ``*-save`` and ``ipset save`` print."""
    if shutil.which(f"{backend}-restore") is None:
        pytest.skip(f"{backend}-restore is not installed")
    ns.run(ns.exec_argv(netns, ["ipset", "restore"]), input=ipsets)
    ns.run(ns.exec_argv(netns, [f"{backend}-restore"]), input=rules)
    saved_rules = ns.run(ns.exec_argv(netns, [f"{backend}-save"])).stdout
    saved_sets = ns.run(ns.exec_argv(netns, ["ipset", "save"])).stdout
    return saved_rules, saved_sets


PACKETS = [
    Packet(IPv4Address("10.244.1.10"), IPv4Address("10.244.1.11"), 6, 40000, 80, in_interface="v0",
           out_interface="v1"),
    Packet(IPv4Address("10.244.1.10"), IPv4Address("10.244.1.11"), 6, 40000, 8080, in_interface="v0",
           out_interface="v1"),
    Packet(IPv4Address("10.244.1.10"), IPv4Address("10.96.0.10"), 17, 40000, 53, in_interface="v0",
           out_interface="v2"),
    Packet(IPv4Address("10.244.1.10"), IPv4Address("10.244.1.11"), 1, 0, 8, in_interface="v0", out_interface="v1"),
    Packet(IPv4Address("192.0.2.10"), IPv4Address("10.244.1.11"), 6, 40000, 23, in_interface="vworld",
           out_interface="v1"),
    Packet(NODE, IPv4Address("10.244.1.11"), 6, 40000, 80, out_interface="v1"),
]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_contract_reads_back_from_the_kernel_as_loaded(netns: str, backend: str) -> None:
    rules_text = (DATA / "contract.rules.v4").read_text()
    sets_text = (DATA / "contract.ipsets.v4").read_text()
    saved_rules, saved_sets = restore_and_save(netns, backend, rules_text, sets_text)
    written = load_iptables(DATA / "contract.rules.v4")
    kernel = read_iptables(saved_rules, f"{backend}-save")
    assert kernel == written.with_builtin_chains()
    assert read_ipsets(saved_sets, "ipset save") == load_ipsets(DATA / "contract.ipsets.v4")

    node = Node(frozenset({NODE}))
    ours = IptablesSimulator(written, load_ipsets(DATA / "contract.ipsets.v4"), node)
    theirs = IptablesSimulator(kernel, read_ipsets(saved_sets, "ipset save"), node)
    for packet in PACKETS:
        a, b = ours.simulate(packet), theirs.simulate(packet)
        assert (a.outcome, a.proxy_port, a.cost, a.mark) == (b.outcome, b.proxy_port, b.cost, b.mark), packet
        assert [(s.table, s.chain, s.rule, s.matched) for s in a.trace] == [
            (s.table, s.chain, s.rule, s.matched) for s in b.trace
        ]


def test_rendered_models_load_into_the_kernel_and_read_back_equal(netns: str) -> None:
    """render_ruleset / IpSet.to_restore write valid restore input: the kernel takes it and prints it back."""
    written = load_iptables(DATA / "contract.saved.v4")
    sets = load_ipsets(DATA / "contract.ipsets.saved.v4")
    sets_text = "\n".join(line for ipset in sets.values() for line in ipset.to_restore()) + "\n"
    saved_rules, saved_sets = restore_and_save(netns, "iptables", render_ruleset(written), sets_text)
    assert read_iptables(saved_rules, "iptables-save") == written
    assert read_ipsets(saved_sets, "ipset save") == sets
