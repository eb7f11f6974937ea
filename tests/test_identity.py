"""Identity allocation: reserved numbers, stable hashing into the cluster range, CIDR identities,
selection, lock files and rendering (DESIGN §3, reference/cilium.md §3.1-3.2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler import identity as identity_module
from compiler.cluster import Cluster, Endpoint, Namespace
from compiler.flow import Profile
from compiler.identity import (
    CLUSTER_ID_MAX,
    CLUSTER_ID_MIN,
    ID_HOST,
    ID_KUBE_APISERVER,
    ID_UNKNOWN,
    ID_WORLD,
    LOCAL_SCOPE,
    IdentityTable,
    _assign,
    _home,
    allocate,
    load_lock,
    render_identities,
)
from compiler.labels import (
    Label,
    LabelFilter,
    Requirement,
    Selector,
    format_labels,
    identity_labels,
    namespace_peer_selector,
)
from compiler.source import InputError, SourceRef

SRC = SourceRef("test.yaml", 1)
Pod = tuple[str, str, dict[str, str]]


def make_cluster(pods: list[Pod]) -> Cluster:
    names = sorted({ns for ns, _, _ in pods})
    namespaces = {n: Namespace(n, {"kubernetes.io/metadata.name": n}, SRC) for n in names}
    endpoints = []
    for i, (ns, name, labels) in enumerate(sorted(pods, key=lambda p: (p[0], p[1]))):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" if i else "10.250.0.9"
        endpoints.append(Endpoint(ns, name, labels, "default", (ip,), (), SRC))
    return Cluster(namespaces=namespaces, endpoints=tuple(endpoints), node_ip="10.244.0.1")


def table_for(pods: list[Pod], profile: Profile = Profile.CILIUM, cidrs: tuple[str, ...] = (),
              lock: dict[str, int] | None = None) -> IdentityTable:
    return allocate(make_cluster(pods), profile, LabelFilter.default(), cidrs, lock=lock)


SHOP: list[Pod] = [
    ("shop", "web-0", {"app": "web", "pod-template-hash": "aaa"}),
    ("shop", "web-1", {"app": "web", "pod-template-hash": "bbb"}),
    ("shop", "db-0", {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}),
    ("shop", "db-1", {"app": "db", "statefulset.kubernetes.io/pod-name": "db-1"}),
    ("other", "web-0", {"app": "web"}),
]


def numbers_by_labels(table: IdentityTable) -> dict[str, int]:
    return {i.canonical: i.number for i in table.identities() if i.kind == "cluster"}


# --- reserved ---------------------------------------------------------------------------------

def test_reserved_identities_keep_ciliums_numbers_and_labels() -> None:
    table = table_for([])
    names = {i.number: format_labels(i.labels) for i in table.identities()}
    assert names == {
        1: "reserved:host", 2: "reserved:world", 3: "reserved:unmanaged", 4: "reserved:health",
        5: "reserved:init", 6: "reserved:remote-node", 7: "reserved:kube-apiserver;reserved:remote-node",
        8: "reserved:ingress", 9: "reserved:world-ipv4", 10: "reserved:world-ipv6",
    }
    assert all(i.kind == "reserved" for i in table.identities())
    assert table.by_number(ID_UNKNOWN).labels == frozenset({Label("reserved", "unknown")})
    assert table.by_number(ID_KUBE_APISERVER).kind == "reserved"


# --- cluster identities -----------------------------------------------------------------------

def test_replicas_differing_only_in_irrelevant_labels_share_an_identity() -> None:
    table = table_for(SHOP)
    web = table.endpoint_identity("shop/web-0")
    assert web == table.endpoint_identity("shop/web-1")
    assert web.endpoints == ("shop/web-0", "shop/web-1")
    assert table.endpoint_identity("shop/db-0") == table.endpoint_identity("shop/db-1")
    assert table.endpoint_identity("other/web-0") != web  # namespace is part of the identity
    assert web.kind == "cluster" and CLUSTER_ID_MIN <= web.number <= CLUSTER_ID_MAX


def test_k8s_profile_gives_every_distinct_label_set_its_own_identity() -> None:
    table = table_for(SHOP, Profile.K8S)
    assert table.endpoint_identity("shop/web-0") != table.endpoint_identity("shop/web-1")


def test_identity_labels_match_the_public_labels_function() -> None:
    cluster = make_cluster(SHOP)
    table = allocate(cluster, Profile.CILIUM, LabelFilter.default())
    for ep in cluster.endpoints:
        expected = identity_labels(ep, cluster, Profile.CILIUM, LabelFilter.default())
        assert table.endpoint_identity(ep.key).labels == expected


def test_number_is_the_hash_of_the_canonical_label_string() -> None:
    table = table_for(SHOP)
    for ident in table.identities():
        if ident.kind == "cluster":
            assert ident.number == CLUSTER_ID_MIN + _home(ident.canonical, CLUSTER_ID_MAX - CLUSTER_ID_MIN + 1)


def test_allocation_is_deterministic_and_independent_of_input_order() -> None:
    a = numbers_by_labels(table_for(SHOP))
    b = numbers_by_labels(table_for(list(reversed(SHOP))))
    assert a == b


def test_a_label_set_keeps_its_number_when_unrelated_pods_are_added() -> None:
    before = numbers_by_labels(table_for(SHOP))
    more = SHOP + [("billing", f"svc-{i}", {"app": f"svc-{i}"}) for i in range(200)]
    after = numbers_by_labels(table_for(more))
    assert {k: after[k] for k in before} == before


def test_a_label_set_keeps_its_number_when_unrelated_pods_are_removed() -> None:
    full = SHOP + [("billing", f"svc-{i}", {"app": f"svc-{i}"}) for i in range(200)]
    before = numbers_by_labels(table_for(full))
    after = numbers_by_labels(table_for(SHOP))
    assert after == {k: before[k] for k in after}


def test_only_true_collisions_move_numbers() -> None:
    # in a range of 8 slots: a and b share a home slot, so the later of them probes on
    size = 8
    names = [f"n{i}" for i in range(40)]
    homes = {n: _home(n, size) for n in names}
    a, b = next((x, y) for x in names for y in names if x < y and homes[x] == homes[y])
    slots = _assign([a, b], size, {})
    assert slots[a] == homes[a] and slots[b] == (homes[a] + 1) % size
    # a name whose home is b's probed slot takes it back: b moves (a true collision), a stays
    c = next(n for n in names if homes[n] == slots[b] and n not in (a, b))
    slots2 = _assign(sorted([a, b, c]), size, {})
    assert slots2[a] == slots[a] and slots2[c] == homes[c] and slots2[b] != slots[b]


@given(st.sets(st.text("abcdef", min_size=1, max_size=4), max_size=12),
       st.sets(st.text("ghijkl", min_size=1, max_size=4), max_size=12))
def test_a_name_whose_home_slot_is_unshared_always_gets_it(base: set[str], extra: set[str]) -> None:
    size = 64
    for names in (sorted(base), sorted(base | extra)):
        slots = _assign(names, size, {})
        assert len(set(slots.values())) == len(names)  # a bijection into the range
        assert all(0 <= s < size for s in slots.values())
        homes = [_home(n, size) for n in names]
        for name, home in zip(names, homes, strict=True):
            if homes.count(home) == 1:
                assert slots[name] == home


@given(st.sets(st.text("abcdef", min_size=1, max_size=4), max_size=12),
       st.sets(st.text("ghijkl", min_size=1, max_size=4), max_size=12))
def test_adding_names_only_moves_names_involved_in_a_collision(base: set[str], extra: set[str]) -> None:
    size = 64
    before = _assign(sorted(base), size, {})
    after = _assign(sorted(base | extra), size, {})
    new_homes = {_home(n, size) for n in extra}
    for name, slot in before.items():
        if after[name] != slot:
            # it moved: either it was probing already, or a new name hashes onto its slot or home
            assert slot != _home(name, size) or slot in new_homes


def test_identity_exhaustion_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_module, "CLUSTER_ID_COUNT", 3)
    pods: list[Pod] = [("shop", f"p{i}", {"app": f"a{i}"}) for i in range(4)]
    with pytest.raises(InputError, match="identity exhaustion: 4 identities needed, only 3"):
        table_for(pods)
    table_for(pods[:3])  # exactly full is fine


def test_exhaustion_limit_is_65280_cluster_identities() -> None:
    assert identity_module.CLUSTER_ID_COUNT == 65280


# --- CIDR identities --------------------------------------------------------------------------

def test_cidr_identities_are_local_scope_with_cidr_and_world_labels() -> None:
    table = table_for(SHOP, cidrs=("10.1.0.0/16", "192.168.1.7"))
    ident = table.cidr_identity("10.1.0.0/16")
    assert ident.number >> 24 == 1 and 1 <= ident.number & 0xFFFFFF <= 0xFFFFFF
    assert ident.kind == "cidr"
    assert ident.labels == frozenset({Label("cidr", "10.1.0.0/16"), Label("reserved", "world")})
    host = table.cidr_identity("192.168.1.7/32")
    assert host == table.cidr_identity("192.168.1.7")
    assert table.cidr_identity("10.1.2.3/16") == ident  # host bits masked
    assert host in table.identities()


def test_cidr_number_is_stable_and_allocated_on_demand() -> None:
    a = table_for(SHOP, cidrs=("10.1.0.0/16",)).cidr_identity("10.1.0.0/16").number
    b = table_for(SHOP, cidrs=("10.9.0.0/16", "10.1.0.0/16")).cidr_identity("10.1.0.0/16").number
    c = table_for(SHOP).cidr_identity("10.1.0.0/16").number
    assert a == b == c == LOCAL_SCOPE | (_home("10.1.0.0/16", 0xFFFFFF) + 1)


def test_the_all_prefixes_are_world() -> None:
    table = table_for(SHOP, cidrs=("0.0.0.0/0",))
    assert table.cidr_identity("0.0.0.0/0").number == ID_WORLD
    assert table.cidr_identity("::/0").number == ID_WORLD


def test_invalid_cidr_is_an_input_error() -> None:
    with pytest.raises(InputError, match="invalid CIDR"):
        table_for(SHOP, cidrs=("10.1.0.0/33",))


# --- selection --------------------------------------------------------------------------------

def test_select_includes_reserved_identities() -> None:
    table = table_for(SHOP, cidrs=("10.1.0.0/16",))
    assert table.select(Selector.of({"reserved:host": ""})) == {ID_HOST}
    world = table.select(Selector.of({"reserved:world": ""}))
    assert world == {ID_WORLD, table.cidr_identity("10.1.0.0/16").number}
    everything = table.select(Selector())
    assert ID_HOST in everything and ID_WORLD in everything and ID_UNKNOWN not in everything


def test_namespaced_selector_selects_pods_only() -> None:
    table = table_for(SHOP)
    sel = namespace_peer_selector(Selector.of(app="web"), "shop")
    assert table.select(sel) == {table.endpoint_identity("shop/web-0").number}
    everyone = table.select(namespace_peer_selector(Selector(), None))
    assert everyone == {table.endpoint_identity(k).number for k in ("shop/web-0", "shop/db-0", "other/web-0")}


def test_selector_on_irrelevant_label_selects_nothing() -> None:
    table = table_for(SHOP)
    assert table.select(Selector.of({"pod-template-hash": "aaa"})) == frozenset()


def test_cidr_selector_selects_contained_prefixes() -> None:
    table = table_for(SHOP, cidrs=("10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16"))
    sel = Selector((Requirement("cidr", "10.1.0.0/16", "Exists"),))
    assert table.select(sel) == {table.cidr_identity(p).number for p in ("10.1.0.0/16", "10.1.2.0/24")}


def test_select_is_memoized_and_refreshed_by_new_cidr_identities() -> None:
    table = table_for(SHOP)
    sel = Selector.of({"reserved:world": ""})
    first = table.select(sel)
    assert table.select(sel) is first
    added = table.cidr_identity("172.16.0.0/12").number
    assert table.select(sel) == first | {added}


KEYS = st.sampled_from(["app", "tier", "io.kubernetes.pod.namespace", "host", "world", "pod-template-hash"])
SOURCES = st.sampled_from(["any", "k8s", "reserved"])
VALUES = st.lists(st.sampled_from(["web", "db", "shop", "other", "front", ""]), min_size=1, max_size=3)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    values = tuple(draw(VALUES)) if op in ("In", "NotIn") else ()
    return Requirement(draw(SOURCES), draw(KEYS), op, values)


TABLE = table_for([*SHOP, ("shop", "x", {"app": "web", "tier": "front"}), ("other", "y", {"tier": "db"})],
                  cidrs=("10.1.0.0/16",))


@given(st.lists(requirements(), max_size=3))
def test_indexed_select_agrees_with_matching_every_identity(reqs: list[Requirement]) -> None:
    sel = Selector(tuple(reqs))
    brute = {i.number for i in TABLE.identities() if sel.matches(i.labels)}
    assert TABLE.select(sel) == brute


# --- addresses --------------------------------------------------------------------------------

def test_identity_of_address() -> None:
    cluster = make_cluster(SHOP)
    table = allocate(cluster, Profile.CILIUM, LabelFilter.default())
    ep = cluster.endpoints[0]
    assert table.identity_of_address(ep.ips[0], cluster) == table.endpoint_identity(ep.key).number
    assert table.identity_of_address(ep.addresses[0], cluster) == table.endpoint_identity(ep.key).number
    assert table.identity_of_address("10.244.0.1", cluster) == ID_HOST
    assert table.identity_of_address("8.8.8.8", cluster) == ID_WORLD


# --- lock file --------------------------------------------------------------------------------

def test_lock_file_pins_numbers(tmp_path: Path) -> None:
    table = table_for(SHOP)
    path = tmp_path / "identities.lock"
    table.to_lock(path)
    lock = load_lock(path)
    assert lock == numbers_by_labels(table)
    web = table.endpoint_identity("shop/web-0").canonical
    free = next(n for n in range(CLUSTER_ID_MIN, CLUSTER_ID_MAX) if n not in lock.values())
    pinned = table_for(SHOP, lock={**lock, web: free})
    assert pinned.endpoint_identity("shop/web-0").number == free
    assert numbers_by_labels(pinned) == {**lock, web: free}


def test_lock_entries_for_absent_label_sets_keep_their_number_reserved() -> None:
    table = table_for(SHOP)
    web = table.endpoint_identity("shop/web-0")
    # pin some absent label set on web's number: web must move instead of taking it
    moved = table_for(SHOP, lock={"k8s:gone=yes": web.number})
    assert moved.endpoint_identity("shop/web-0").number != web.number


def test_bad_lock_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="outside"):
        table_for(SHOP, lock={"k8s:a=b": 5})
    with pytest.raises(InputError, match="pinned twice"):
        table_for(SHOP, lock={"k8s:a=b": 300, "k8s:c=d": 300})
    path = tmp_path / "bad.lock"
    path.write_text(json.dumps({"version": 9}))
    with pytest.raises(InputError, match="identity lock file"):
        load_lock(path)


# --- rendering --------------------------------------------------------------------------------

def test_render_text_has_aligned_columns_and_one_label_per_line() -> None:
    table = table_for([("shop", "web-0", {"app": "web"})])
    text = render_identities(table, "text")
    lines = text.splitlines()
    assert lines[0] == "NUMBER  ENDPOINTS  LABELS"
    assert lines[1] == "1       0          reserved:host"
    number = table.endpoint_identity("shop/web-0").number
    start = lines.index(f"{number:<6}  1          k8s:app=web")
    assert lines[start + 1] == "                   k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop"
    assert text == render_identities(table_for([("shop", "web-0", {"app": "web"})]), "text")


def test_render_json_lists_labels_and_endpoints() -> None:
    table = table_for(SHOP)
    body = json.loads(render_identities(table, "json"))
    web = table.endpoint_identity("shop/web-0")
    row = next(r for r in body if r["number"] == web.number)
    assert row == {"number": web.number, "labels": [str(lb) for lb in sorted(web.labels)], "endpoints": 2,
                   "endpoint_names": ["shop/web-0", "shop/web-1"]}
    assert [r["number"] for r in body] == sorted(r["number"] for r in body)
    with pytest.raises(InputError, match="unknown identities format"):
        render_identities(table, "yaml")


# --- performance ------------------------------------------------------------------------------

def test_allocate_20000_endpoints_and_select_5000_selectors_quickly() -> None:
    pods: list[Pod] = [(f"ns{i % 50}", f"p{i}", {"app": f"app{i % 2000}", "pod-template-hash": str(i)})
                       for i in range(20000)]
    cluster = make_cluster(pods)
    start = time.perf_counter()
    table = allocate(cluster, Profile.CILIUM, LabelFilter.default())
    elapsed = time.perf_counter() - start
    assert len([i for i in table.identities() if i.kind == "cluster"]) == 2000
    assert elapsed < 2.0, f"allocate took {elapsed:.2f}s"
    selectors = [namespace_peer_selector(Selector.of(app=f"app{i % 2000}", tier=str(i)), f"ns{i % 50}")
                 for i in range(2500)]
    selectors += [namespace_peer_selector(Selector.of(app=f"app{i}"), f"ns{i % 50}") for i in range(2500)]
    start = time.perf_counter()
    total = sum(len(table.select(s)) for s in selectors)
    elapsed = time.perf_counter() - start
    assert total == 2000  # app{i} lives in ns{i % 50}; the tier selectors match nothing
    assert elapsed < 2.0, f"5000 selects took {elapsed:.2f}s"
