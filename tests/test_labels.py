"""Labels, the Cilium label filter, selectors and their namespacing (SEMANTICS §3-4)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler.cluster import Cluster, Endpoint, Namespace
from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.inputs.ciliumpolicy import EndpointSelector
from compiler.inputs.selector import LabelSelector
from compiler.labels import (
    HOST_LABELS,
    WORLD_LABELS,
    Label,
    LabelFilter,
    Requirement,
    Selector,
    endpoint_labels,
    format_labels,
    identity_labels,
    k8s_namespace_selector,
    k8s_pod_selector,
    namespace_peer_selector,
    namespace_subject_selector,
    reserved_labels,
    selector_from_k8s,
)
from compiler.source import SourceRef

SRC = SourceRef("test.yaml", 1)


def k8s(key: str, value: str = "") -> Label:
    return Label("k8s", key, value)


def make_cluster(*pods: tuple[str, str, dict[str, str]], ns_labels: dict[str, dict[str, str]] | None = None,
                 sa: str = "default") -> Cluster:
    ns_labels = ns_labels or {}
    names = sorted({ns for ns, _, _ in pods} | set(ns_labels))
    namespaces = {n: Namespace(n, {"kubernetes.io/metadata.name": n, **ns_labels.get(n, {})}, SRC) for n in names}
    endpoints = tuple(sorted((Endpoint(ns, name, labels, sa, (f"10.244.1.{i + 2}",), (), SRC)
                              for i, (ns, name, labels) in enumerate(pods)), key=lambda e: e.key))
    return Cluster(namespaces=namespaces, endpoints=endpoints)


def labels_of(ep_key: str, cluster: Cluster, profile: Profile = Profile.CILIUM,
              label_filter: LabelFilter | None = None) -> frozenset[Label]:
    ep = cluster.endpoint(ep_key)
    assert ep is not None
    return identity_labels(ep, cluster, profile, label_filter or LabelFilter.default())


# --- labels -----------------------------------------------------------------------------------

def test_label_prints_as_source_key_value_and_reserved_without_value() -> None:
    assert str(k8s("app", "web")) == "k8s:app=web"
    assert str(Label("reserved", "host", "")) == "reserved:host"
    assert Label.parse("k8s:app=web") == k8s("app", "web")
    assert Label.parse("reserved:host") == Label("reserved", "host")


def test_canonical_label_string_is_sorted_and_order_independent() -> None:
    a = frozenset({k8s("c", "d"), k8s("a", "b")})
    assert format_labels(a) == "k8s:a=b;k8s:c=d"
    assert format_labels(frozenset(reversed(sorted(a)))) == format_labels(a)


def test_reserved_label_sets() -> None:
    assert frozenset({Label("reserved", "host")}) == HOST_LABELS
    assert frozenset({Label("reserved", "world")}) == WORLD_LABELS
    assert reserved_labels("health") == frozenset({Label("reserved", "health")})


def test_endpoint_labels_include_namespace_serviceaccount_and_cluster() -> None:
    cluster = make_cluster(("shop", "web-0", {"app": "web"}), ns_labels={"shop": {"team": "a"}}, sa="web-sa")
    ep = cluster.endpoint("shop/web-0")
    assert ep is not None
    assert endpoint_labels(ep, cluster) == {
        k8s("app", "web"),
        k8s("io.kubernetes.pod.namespace", "shop"),
        k8s("io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name", "shop"),
        k8s("io.cilium.k8s.namespace.labels.team", "a"),
        k8s("io.cilium.k8s.policy.serviceaccount", "web-sa"),
        k8s("io.cilium.k8s.policy.cluster", "default"),
    }


def test_pod_labels_owned_by_cilium_are_stripped_and_namespace_overridden() -> None:
    cluster = make_cluster(("shop", "p", {"io.cilium.k8s.policy.serviceaccount": "fake",
                                          "io.kubernetes.pod.namespace": "other"}))
    ep = cluster.endpoint("shop/p")
    assert ep is not None
    labels = endpoint_labels(ep, cluster)
    assert k8s("io.cilium.k8s.policy.serviceaccount", "default") in labels
    assert k8s("io.cilium.k8s.policy.serviceaccount", "fake") not in labels
    assert [lb.value for lb in labels if lb.key == "io.kubernetes.pod.namespace"] == ["shop"]


def test_empty_service_account_is_omitted() -> None:
    cluster = make_cluster(("shop", "p", {}), sa="")
    ep = cluster.endpoint("shop/p")
    assert ep is not None
    assert not any(lb.key == "io.cilium.k8s.policy.serviceaccount" for lb in endpoint_labels(ep, cluster))


# --- label filter (reference/cilium.md §3.3) ---------------------------------------------------

@pytest.mark.parametrize("key", [
    "pod-template-hash", "controller-uid", "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-completion-index", "controller-revision-hash",
    "pod-template-generation", "kubernetes.io/os", "io.kubernetes.container.name", "k8s.io/foo",
    "failure-domain.beta.kubernetes.io/zone", "annotation.foo", "etcd_node",
])
def test_default_filter_makes_these_pod_labels_not_identity_relevant(key: str) -> None:
    assert not LabelFilter.default().relevant(k8s(key, "x"))


@pytest.mark.parametrize("key", [
    "app", "job-name", "batch.kubernetes.io/job-name", "app.kubernetes.io/name", "tier",
    "io.kubernetes.pod.namespace", "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
    "io.cilium.k8s.policy.serviceaccount", "io.cilium.k8s.policy.cluster",
])
def test_default_filter_keeps_these_labels_identity_relevant(key: str) -> None:
    assert LabelFilter.default().relevant(k8s(key, "x"))


def test_pod_template_hash_is_not_identity_relevant() -> None:
    cluster = make_cluster(("shop", "web-0", {"app": "web", "pod-template-hash": "abc"}))
    assert k8s("pod-template-hash", "abc") not in labels_of("shop/web-0", cluster)
    assert k8s("app", "web") in labels_of("shop/web-0", cluster)


def test_k8s_profile_keeps_every_label() -> None:
    cluster = make_cluster(("shop", "web-0", {"app": "web", "pod-template-hash": "abc"}))
    assert k8s("pod-template-hash", "abc") in labels_of("shop/web-0", cluster, Profile.K8S)


def test_reserved_labels_are_always_relevant() -> None:
    strict = LabelFilter.from_options(["k8s:app", "!host", "reserved:!host"])
    assert strict.relevant(Label("reserved", "host"))
    assert strict.relevant(Label("reserved", "world"))


def test_allow_list_mode_via_user_include_keeps_only_included_pod_labels() -> None:
    allow = LabelFilter.from_options(["k8s:app"])
    assert allow.allow_list
    assert allow.relevant(k8s("app", "web"))
    assert not allow.relevant(k8s("tier", "front"))
    assert not allow.relevant(k8s("job-name", "x"))
    # the default includes still apply in allow-list mode
    assert allow.relevant(k8s("io.kubernetes.pod.namespace", "shop"))
    assert allow.relevant(k8s("io.cilium.k8s.namespace.labels.team", "a"))
    assert allow.relevant(k8s("io.cilium.k8s.policy.serviceaccount", "sa"))


def test_user_excludes_alone_do_not_switch_to_allow_list_mode() -> None:
    excl = LabelFilter.from_options(["k8s:!tier"])
    assert not excl.allow_list
    assert not excl.relevant(k8s("tier", "front"))
    assert excl.relevant(k8s("app", "web"))


def test_source_qualified_pattern_only_applies_to_that_source() -> None:
    flt = LabelFilter.from_options(["container:!app"])
    assert flt.relevant(k8s("app", "web"))
    assert not flt.relevant(Label("container", "app", "web"))


def test_longer_include_beats_shorter_exclude_and_vice_versa() -> None:
    flt = LabelFilter.from_options([r"!foo", r"foo\.bar"])
    assert flt.relevant(k8s("foo.bar", "x"))  # include 7 > exclude 3
    assert not flt.relevant(k8s("foo.baz", "x"))
    flt2 = LabelFilter.from_options([r"!foo\.bar\.baz", r"foo"])
    assert not flt2.relevant(k8s("foo.bar.baz", "x"))  # exclude 11 >= include 3


def test_bad_label_pattern_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid label pattern"):
        LabelFilter.from_options(["k8s:app("])
    with pytest.raises(ValueError, match="empty prefix"):
        LabelFilter.from_options(["k8s:!"])


# --- selectors --------------------------------------------------------------------------------

def test_requirement_parses_sources() -> None:
    assert Requirement.of("k8s:app", "Exists") == Requirement("k8s", "app", "Exists")
    assert Requirement.of("reserved:host", "Exists") == Requirement("reserved", "host", "Exists")
    assert Requirement.of("any:app", "Exists") == Requirement("any", "app", "Exists")
    assert Requirement.of("app", "Exists") == Requirement("any", "app", "Exists")


def test_requirement_values_are_canonical_and_checked() -> None:
    assert Requirement("any", "a", "In", ("y", "x", "y")).values == ("x", "y")
    with pytest.raises(ValueError):
        Requirement("any", "a", "In", ())
    with pytest.raises(ValueError):
        Requirement("any", "a", "Exists", ("x",))
    with pytest.raises(ValueError):
        Requirement("any", "a", "Equals", ("x",))


def test_selector_operators() -> None:
    labels = frozenset({k8s("app", "web"), k8s("tier", "front")})
    assert Selector.of(app="web").matches(labels)
    assert not Selector.of(app="db").matches(labels)
    assert Selector((Requirement("any", "app", "In", ("db", "web")),)).matches(labels)
    assert Selector((Requirement("any", "app", "NotIn", ("db",)),)).matches(labels)
    assert not Selector((Requirement("any", "app", "NotIn", ("web",)),)).matches(labels)
    assert Selector((Requirement("any", "missing", "NotIn", ("web",)),)).matches(labels)
    assert Selector((Requirement("any", "tier", "Exists"),)).matches(labels)
    assert Selector((Requirement("any", "missing", "DoesNotExist"),)).matches(labels)
    assert not Selector((Requirement("any", "tier", "DoesNotExist"),)).matches(labels)
    assert not Selector.of(app="web", tier="back").matches(labels)  # AND


def test_empty_selector_matches_everything() -> None:
    assert Selector().matches(HOST_LABELS)
    assert Selector().matches(frozenset())


def test_source_qualified_key_only_matches_that_source() -> None:
    host = HOST_LABELS
    assert Selector.of({"reserved:host": ""}).matches(host)
    assert Selector.of({"any:host": ""}).matches(host)
    assert not Selector.of({"k8s:host": ""}).matches(host)
    assert Selector((Requirement("k8s", "host", "DoesNotExist"),)).matches(host)


def test_cidr_label_matches_a_containing_prefix_selector() -> None:
    ident = frozenset({Label("cidr", "10.0.0.1/32"), Label("reserved", "world")})
    assert Selector((Requirement("cidr", "10.0.0.0/24", "Exists"),)).matches(ident)
    assert not Selector((Requirement("cidr", "10.0.1.0/24", "Exists"),)).matches(ident)


def test_selector_string_is_canonical_and_parses_back() -> None:
    a = Selector((Requirement("k8s", "io.kubernetes.pod.namespace", "In", ("shop",)),
                  Requirement("any", "app", "In", ("web", "api")), Requirement("any", "x", "DoesNotExist"),
                  Requirement("any", "t", "NotIn", ("a",)), Requirement("reserved", "host", "Exists")))
    b = Selector(tuple(reversed(a.requirements)))
    assert a == b and str(a) == str(b)
    assert str(a) == "any:app in (api,web),any:t!=a,!any:x,k8s:io.kubernetes.pod.namespace=shop,reserved:host"
    assert Selector.parse(str(a)) == a
    assert str(Selector()) == "{}" and Selector.parse("{}") == Selector()


def test_selector_helpers() -> None:
    sel = selector_from_k8s(EndpointSelector.model_validate(
        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x"},
         "matchExpressions": [{"key": "io.cilium.k8s.namespace.labels.team", "operator": "Exists"}]}))
    assert sel.selects_namespace_key() and sel.has_namespace_labels() and not sel.has_reserved()
    assert Selector.of({"reserved:host": ""}).has_reserved()
    extra = Requirement("any", "app", "Exists")
    assert extra in Selector().with_requirements([extra]).requirements


# --- namespacing (SEMANTICS §4.2) ---------------------------------------------------------------

NS_SHOP = Requirement("k8s", "io.kubernetes.pod.namespace", "In", ("shop",))
NS_EXISTS = Requirement("k8s", "io.kubernetes.pod.namespace", "Exists")


def test_cnp_peer_selector_without_namespace_gets_the_policy_namespace() -> None:
    web = Selector.of(app="web")
    assert namespace_peer_selector(web, "shop") == web.with_requirements([NS_SHOP])
    assert namespace_peer_selector(Selector(), "shop") == Selector((NS_SHOP,))


def test_ccnp_peer_selector_gets_namespace_exists() -> None:
    assert namespace_peer_selector(Selector(), None) == Selector((NS_EXISTS,))
    ns_sel = Selector.of({"io.cilium.k8s.namespace.labels.team": "a"})
    assert namespace_peer_selector(ns_sel, None) == ns_sel.with_requirements([NS_EXISTS])


def test_ccnp_empty_selector_does_not_match_host() -> None:
    sel = namespace_peer_selector(Selector(), None)
    assert not sel.matches(HOST_LABELS) and not sel.matches(WORLD_LABELS)
    assert sel.matches(frozenset({k8s("io.kubernetes.pod.namespace", "any")}))


def test_namespace_label_selectors_are_not_namespaced() -> None:
    sel = Selector.of({"io.cilium.k8s.namespace.labels.team": "a"})
    assert namespace_peer_selector(sel, "shop") == sel


def test_reserved_keys_are_never_namespaced() -> None:
    sel = Selector.of({"reserved:host": ""})
    assert namespace_peer_selector(sel, "shop") == sel
    assert namespace_peer_selector(sel, None) == sel


def test_peer_selector_naming_the_namespace_is_used_as_is() -> None:
    for key in ("k8s:io.kubernetes.pod.namespace", "io.kubernetes.pod.namespace"):
        sel = Selector.of({key: "other"})
        assert namespace_peer_selector(sel, "shop") == sel
        assert namespace_peer_selector(sel, None) == sel


def test_cnp_subject_selector_forces_the_policy_namespace() -> None:
    sel = Selector.of({"app": "web", "k8s:io.kubernetes.pod.namespace": "other"})
    assert namespace_subject_selector(sel, "shop") == Selector.of(app="web").with_requirements([NS_SHOP])
    assert namespace_subject_selector(sel, None) == sel


# --- NetworkPolicy translation (SEMANTICS §4.1) ------------------------------------------------

def test_k8s_pod_selector_adds_the_namespace() -> None:
    sel = k8s_pod_selector(LabelSelector.model_validate({"matchLabels": {"app": "web"}}), "shop")
    assert sel == Selector((Requirement("k8s", "app", "In", ("web",)), NS_SHOP))
    assert k8s_pod_selector(LabelSelector(), "shop") == Selector((NS_SHOP,))


def test_k8s_empty_namespace_selector_means_every_namespace() -> None:
    assert k8s_namespace_selector(LabelSelector(), None) == Selector((NS_EXISTS,))


def test_k8s_namespace_selector_prefixes_keys_and_ands_the_pod_selector() -> None:
    ns_sel = LabelSelector.model_validate({"matchLabels": {"team": "a"},
                                           "matchExpressions": [{"key": "env", "operator": "Exists"}]})
    pod_sel = LabelSelector.model_validate({"matchLabels": {"app": "web"}})
    assert k8s_namespace_selector(ns_sel, pod_sel) == Selector((
        Requirement("k8s", "io.cilium.k8s.namespace.labels.team", "In", ("a",)),
        Requirement("k8s", "io.cilium.k8s.namespace.labels.env", "Exists"),
        Requirement("k8s", "app", "In", ("web",)),
    ))


def test_selectors_against_loaded_cluster(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop, labels: {team: web}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: api, namespace: shop, labels: {app: api, pod-template-hash: abc}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: job, namespace: other, labels: {job-name: nightly}}
        spec: {containers: [{name: c}]}
    """))
    cluster = load_inputs([str(path)]).cluster
    api = labels_of("shop/api", cluster)
    job = labels_of("other/job", cluster)
    team = k8s_namespace_selector(LabelSelector.model_validate({"matchLabels": {"team": "web"}}), None)
    assert team.matches(api) and not team.matches(job)
    assert Selector.of({"job-name": "nightly"}).matches(job)
    # a selector on an identity-irrelevant label matches nothing under the cilium profile
    assert not Selector.of({"pod-template-hash": "abc"}).matches(api)
    assert Selector.of({"pod-template-hash": "abc"}).matches(labels_of("shop/api", cluster, Profile.K8S))
