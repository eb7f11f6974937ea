"""Hypothesis strategies: random but valid clusters, policies and flows.

Everything is generated as plain dicts in the shape users write (Namespaces, Pods, Services,
NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy), dumped with
``yaml.safe_dump_all`` and read back through :func:`compiler.inputs.load_inputs`, so the
property tests exercise the real loader too. Inputs are valid by construction: one L3 peer kind
per Cilium rule, ``endPort >= port``, no ``endPort`` on named ports, excepts strictly inside
their CIDR, L7 only on allow rules with a TCP (or ANY) numeric port, and never two parsers on
one port: HTTP only on 80, Kafka only on 9092, DNS only on egress port 53.

Small vocabularies keep collisions likely: the same label keys on pods, selectors and
namespaces; the port name ``http`` meaning 80 on some pods and 8080 on others (Cilium's
duplicate named-port rule); CIDRs that contain pod, node and world addresses.
"""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from compiler.cluster import DEFAULT_NODE_IP
from compiler.flow import DnsRequest, Flow, HttpRequest, KafkaRequest, L7Request, Protocol
from compiler.inputs import Inputs, load_inputs

Draw = Any  # hypothesis' DrawFn (its type is not public API)
Obj = dict[str, Any]

NAMESPACES = ("ns-a", "ns-b", "ns-c")
NS_LABELS = {"team": ("a", "b"), "env": ("prod", "dev"), "beta.kubernetes.io/arch": ("amd64",)}
POD_LABELS = {
    "app": ("web", "db", "api"),
    "env": ("prod", "dev"),
    "pod-template-hash": ("x1", "x2"),  # invisible under the cilium label filter
    "app.kubernetes.io/name": ("web", "db"),
}
SERVICE_ACCOUNTS = ("sa1", "sa2")
#: (name, number, protocol): "http" is 80 on some pods and 8080 on others.
NAMED_PORTS = (
    ("http", 80, "TCP"),
    ("http", 8080, "TCP"),
    ("metrics", 81, "TCP"),
    ("metrics", 1003, "TCP"),
    ("dns", 53, "UDP"),
    ("kafka", 9092, "TCP"),
)
PORT_NAMES = ("http", "http", "metrics", "dns", "kafka", "nope")
PORTS = (80, 81, 443, 9092, 53, 999, 1000, 1005, 1006, 8080)
EXTERNAL = ("8.8.8.8", "8.8.4.4", "192.0.2.10", "203.0.113.5", "10.244.3.3", "10.0.0.1")
CIDRS = (
    "0.0.0.0/0",
    "10.244.0.0/16",
    "10.244.1.0/24",
    "10.244.2.0/24",
    "10.244.1.10/32",
    "10.244.0.1/32",
    "8.8.0.0/16",
    "8.8.8.8/32",
    "192.0.2.0/24",
    "10.0.0.0/8",
)
ENTITIES = ("all", "world", "world-ipv4", "host", "cluster", "remote-node", "kube-apiserver", "none")
SERVICES = ("svc-web", "svc-db")
PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP)


def pod_ip(index: int) -> str:
    return f"10.244.{1 + index % 2}.{10 + index}"


# --- selectors ----------------------------------------------------------------------------------


def _requirement(draw: Draw, keys: dict[str, tuple[str, ...]], prefix: str = "") -> Obj:
    key = draw(st.sampled_from(sorted(keys)))
    operator = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    out: Obj = {"key": prefix + key, "operator": operator}
    if operator in ("In", "NotIn"):
        out["values"] = draw(st.lists(st.sampled_from(keys[key]), min_size=1, max_size=2, unique=True))
    return out


@st.composite
def k8s_selector(draw: Draw, keys: dict[str, tuple[str, ...]] = POD_LABELS) -> Obj:
    """A Kubernetes label selector over ``keys``; ``{}`` is common."""
    out: Obj = {}
    labels = draw(st.dictionaries(st.sampled_from(sorted(keys)), st.just(""), max_size=2))
    if labels:
        out["matchLabels"] = {k: draw(st.sampled_from(keys[k])) for k in labels}
    expressions = draw(st.integers(0, 2))
    if expressions:
        out["matchExpressions"] = [_requirement(draw, keys) for _ in range(expressions)]
    return out


@st.composite
def cilium_selector(draw: Draw, subject: bool = False) -> Obj:
    """A Cilium endpoint selector: pod keys with optional ``k8s:``/``any:`` sources, plus (for
    peers) namespace-label, namespace-name, service-account and reserved keys."""
    if subject and draw(st.booleans()):
        return draw(st.sampled_from(({}, {"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "db"}})))
    sel = draw(k8s_selector())
    source = draw(st.sampled_from(("", "", "k8s:", "any:")))
    if source:
        sel = {
            "matchLabels": {source + k: v for k, v in (sel.get("matchLabels") or {}).items()},
            "matchExpressions": [{**r, "key": source + r["key"]} for r in sel.get("matchExpressions") or []],
        }
        sel = {k: v for k, v in sel.items() if v}
    extra = draw(st.sampled_from(("none",) * 4 + ("ns-label", "ns-name", "sa", "reserved")))
    if extra == "ns-label":
        sel.setdefault("matchExpressions", []).append(
            _requirement(draw, {"team": ("a", "b")}, "io.cilium.k8s.namespace.labels.")
        )
    elif extra == "ns-name" and not subject:
        sel.setdefault("matchLabels", {})["k8s:io.kubernetes.pod.namespace"] = draw(st.sampled_from(NAMESPACES))
    elif extra == "sa":
        sel.setdefault("matchLabels", {})["io.cilium.k8s.policy.serviceaccount"] = draw(
            st.sampled_from(SERVICE_ACCOUNTS)
        )
    elif extra == "reserved" and not subject:
        name = draw(st.sampled_from(("host", "world")))
        if draw(st.booleans()):
            sel.setdefault("matchLabels", {})[f"reserved:{name}"] = ""
        else:
            sel.setdefault("matchExpressions", []).append({"key": f"reserved:{name}", "operator": "Exists"})
    return sel


# --- ports ----------------------------------------------------------------------------------------


@st.composite
def np_port(draw: Draw) -> Obj:
    out: Obj = {}
    protocol = draw(st.sampled_from((None, "TCP", "UDP", "SCTP")))
    if protocol:
        out["protocol"] = protocol
    kind = draw(st.sampled_from(("number", "number", "range", "named", "named", "none")))
    if kind in ("number", "range"):
        out["port"] = draw(st.sampled_from(PORTS))
        if kind == "range":
            out["endPort"] = out["port"] + draw(st.sampled_from((0, 1, 5, 100)))
    elif kind == "named":
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    return out


@st.composite
def cilium_port(draw: Draw) -> Obj:
    out: Obj = {}
    protocol = draw(st.sampled_from((None, "TCP", "UDP", "SCTP", "ANY")))
    if protocol:
        out["protocol"] = protocol
    kind = draw(st.sampled_from(("number", "number", "range", "named", "named", "zero", "none")))
    if kind in ("number", "range"):
        port = draw(st.sampled_from(PORTS))
        out["port"] = str(port)
        if kind == "range":
            out["endPort"] = port + draw(st.sampled_from((0, 1, 5, 100)))
    elif kind == "named":
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    elif kind == "zero":
        out["port"] = "0"
    return out


@st.composite
def l7_entry(draw: Draw, egress: bool) -> Obj:
    """A ``toPorts`` entry with L7 rules, on the one port its parser may use."""
    parser = draw(st.sampled_from(("http", "http", "kafka") + (("dns",) if egress else ())))
    if parser == "http":
        rules = draw(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "method": st.sampled_from(("GET", "POST", "GET|POST")),
                        "path": st.sampled_from(("/", "/api/.*", "/login")),
                        "headers": st.just(["X-Token: yes"]),
                    },
                ),
                max_size=2,
            )
        )
        return {"ports": [{"port": "80", "protocol": draw(st.sampled_from(("TCP", "ANY")))}], "rules": {"http": rules}}
    if parser == "kafka":
        rule = draw(st.fixed_dictionaries({}, optional={"topic": st.sampled_from(("orders", "logs"))}))
        choice = draw(st.sampled_from(("role:produce", "role:consume", "apiKey:fetch", "apiKey:metadata", "")))
        if choice:
            field, value = choice.split(":")
            rule[field] = value
        return {"ports": [{"port": "9092", "protocol": "TCP"}], "rules": {"kafka": [rule]}}
    pattern = draw(st.sampled_from(({"matchPattern": "*"}, {"matchPattern": "*.example.com"}, {"matchName": "a.b"})))
    return {"ports": [{"port": "53", "protocol": draw(st.sampled_from(("ANY", "UDP")))}], "rules": {"dns": [pattern]}}


@st.composite
def cilium_l4(draw: Draw, deny: bool, egress: bool) -> Obj:
    """``toPorts`` or ``icmps`` (or neither) for a Cilium rule."""
    kind = draw(st.sampled_from(("none", "ports", "ports", "icmps", "empty") + (() if deny else ("l7", "l7"))))
    if kind == "ports":
        entries = draw(st.lists(st.lists(cilium_port(), min_size=1, max_size=2), min_size=1, max_size=2))
        return {"toPorts": [{"ports": ports} for ports in entries]}
    if kind == "l7":
        entries = [draw(l7_entry(egress))]
        if draw(st.booleans()):
            entries.append({"ports": draw(st.lists(cilium_port(), min_size=1, max_size=2))})
        return {"toPorts": entries}
    if kind == "icmps":
        types = draw(st.lists(st.sampled_from((8, 0, 3, "EchoRequest")), min_size=1, max_size=2))
        return {"icmps": [{"fields": [{"type": t} for t in types]}]}
    if kind == "empty":
        return {"toPorts": []}
    return {}


# --- peers ----------------------------------------------------------------------------------------


@st.composite
def cidr_rule(draw: Draw) -> Obj:
    cidr = draw(st.sampled_from(CIDRS))
    net = ipaddress.ip_network(cidr)
    inside = [c for c in CIDRS if (n := ipaddress.ip_network(c)).subnet_of(net) and n.prefixlen > net.prefixlen]
    out: Obj = {"cidr": cidr}
    if inside and draw(st.booleans()):
        out["except"] = draw(st.lists(st.sampled_from(inside), min_size=1, max_size=2, unique=True))
    return out


@st.composite
def np_peer(draw: Draw) -> Obj:
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        block = draw(cidr_rule())
        return {"ipBlock": block}
    out: Obj = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(k8s_selector())
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(k8s_selector({**NS_LABELS, "kubernetes.io/metadata.name": NAMESPACES}))
    return out


@st.composite
def cilium_l3(draw: Draw, egress: bool, services: list[tuple[str, str]]) -> Obj:
    prefix = "to" if egress else "from"
    kinds = ["endpoints", "endpoints", "cidr", "cidrset", "entities", "none", "none"] + (["services"] if egress else [])
    kind = draw(st.sampled_from(kinds))
    out: Obj = {}
    if kind == "endpoints":
        out[f"{prefix}Endpoints"] = draw(st.lists(cilium_selector(), max_size=2))
    elif kind == "cidr":
        bare = [c.removesuffix("/32") for c in CIDRS if c.endswith("/32")]
        out[f"{prefix}CIDR"] = draw(st.lists(st.sampled_from(CIDRS + tuple(bare)), min_size=1, max_size=2))
    elif kind == "cidrset":
        out[f"{prefix}CIDRSet"] = draw(st.lists(cidr_rule(), min_size=1, max_size=2))
    elif kind == "entities":
        out[f"{prefix}Entities"] = draw(st.lists(st.sampled_from(ENTITIES), min_size=1, max_size=2, unique=True))
    elif kind == "services":
        refs = []
        for _ in range(draw(st.integers(1, 2))):
            name, namespace = draw(st.sampled_from([*services, ("svc-none", "ns-a")]))
            ref: Obj = {"serviceName": name}
            if draw(st.booleans()):
                ref["namespace"] = namespace
            refs.append({"k8sService": ref})
        out["toServices"] = refs
    if draw(st.integers(0, 5)) == 0:
        out[f"{prefix}Requires"] = [draw(cilium_selector())]
    return out


# --- policies -------------------------------------------------------------------------------------


@st.composite
def network_policy(draw: Draw, name: str, namespaces: list[str]) -> Obj:
    simple = st.sampled_from(({}, {"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "db"}}))
    spec: Obj = {"podSelector": draw(st.one_of(simple, k8s_selector()))}
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            rules = []
            for _ in range(draw(st.integers(0, 2))):
                rule: Obj = {}
                peers = draw(st.sampled_from(("absent", "empty", "list", "list")))
                if peers != "absent":
                    rule[peers_field] = [] if peers == "empty" else draw(st.lists(np_peer(), min_size=1, max_size=2))
                ports = draw(st.sampled_from(("absent", "empty", "list", "list")))
                if ports != "absent":
                    rule["ports"] = [] if ports == "empty" else draw(st.lists(np_port(), min_size=1, max_size=2))
                rules.append(rule)
            spec[direction] = rules
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    namespace = draw(st.sampled_from((*namespaces, *namespaces, *NAMESPACES)))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@st.composite
def cilium_rule(draw: Draw, services: list[tuple[str, str]]) -> Obj:
    rule: Obj = {}
    if draw(st.integers(0, 9)) == 0:
        rule["nodeSelector"] = {}
    else:
        rule["endpointSelector"] = draw(cilium_selector(subject=True))
    sections = draw(
        st.lists(
            st.sampled_from(("ingress", "ingressDeny", "egress", "egressDeny")), min_size=1, max_size=3, unique=True
        )
    )
    for section in sections:
        egress, deny = section.startswith("egress"), section.endswith("Deny")
        items = []
        for _ in range(draw(st.integers(1, 2))):
            l4 = draw(cilium_l4(deny, egress))
            if any("rules" in entry for entry in l4.get("toPorts", [])) and draw(st.booleans()):
                l3 = draw(st.sampled_from(({}, {}, {f"{'to' if egress else 'from'}Endpoints": [{}]})))
            else:
                l3 = draw(cilium_l3(egress, services))
            item = {**l3, **l4}
            if "nodeSelector" in rule and "toPorts" in item:
                item["toPorts"] = [{"ports": e["ports"]} for e in item["toPorts"]]  # no L7 in host policies
            items.append(item)
        rule[section] = items
    if draw(st.integers(0, 3)) == 0:
        rule["enableDefaultDeny"] = draw(
            st.fixed_dictionaries({}, optional={"ingress": st.booleans(), "egress": st.booleans()})
        )
    return rule


@st.composite
def cilium_policy(draw: Draw, name: str, namespaces: list[str], services: list[tuple[str, str]]) -> Obj:
    clusterwide = draw(st.booleans())
    metadata: Obj = {"name": name}
    if not clusterwide:
        metadata["namespace"] = draw(st.sampled_from((*namespaces, *namespaces, *NAMESPACES)))
    out: Obj = {
        "apiVersion": "cilium.io/v2",
        "metadata": metadata,
        "kind": "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy",
    }
    if draw(st.integers(0, 3)) == 0:
        out["specs"] = draw(st.lists(cilium_rule(services), min_size=1, max_size=2))
    else:
        out["spec"] = draw(cilium_rule(services))
    return out


@st.composite
def l7_policy(draw: Draw, name: str, namespaces: list[str]) -> Obj:
    """A Cilium policy built around one L7 allow with a permissive peer, so that flows do reach
    the proxy often (random policies rarely line up subject, peer, protocol and port)."""
    egress = draw(st.booleans())
    prefix = "to" if egress else "from"
    peer = draw(st.sampled_from(({}, {f"{prefix}Endpoints": [{}]}, {f"{prefix}Entities": ["all"]})))
    entries = [draw(l7_entry(egress))]
    if draw(st.booleans()):
        entries.append({"ports": draw(st.lists(cilium_port(), min_size=1, max_size=2))})
    rule: Obj = {
        "endpointSelector": draw(st.sampled_from(({}, {"matchLabels": {"app": "web"}}))),
        "egress" if egress else "ingress": [{**peer, "toPorts": entries}],
    }
    if draw(st.integers(0, 3)) == 0:
        rule["enableDefaultDeny"] = {"egress" if egress else "ingress": False}
    metadata = {"name": name, "namespace": draw(st.sampled_from(namespaces))}
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": metadata, "spec": rule}


# --- cluster --------------------------------------------------------------------------------------


@st.composite
def cluster_objects(draw: Draw) -> tuple[list[Obj], list[str], list[tuple[str, str]]]:
    """Namespaces, pods and services; returns the objects, the namespaces and (service, namespace)s."""
    namespaces = list(NAMESPACES[: draw(st.integers(1, 3))])
    objects: list[Obj] = []
    for ns in namespaces:
        labels = {k: draw(st.sampled_from(v)) for k, v in NS_LABELS.items() if draw(st.booleans())}
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
    for index in range(draw(st.integers(2, 6))):
        labels = {k: draw(st.sampled_from(v)) for k, v in POD_LABELS.items() if draw(st.integers(0, 2))}
        ports = []
        for name, number, protocol in draw(
            st.lists(st.sampled_from(NAMED_PORTS), min_size=1, max_size=3, unique_by=lambda p: p[0])
        ):
            ports.append({"name": name, "containerPort": number, "protocol": protocol})
        spec: Obj = {"containers": [{"name": "c", "ports": ports}]}
        if draw(st.booleans()):
            spec["serviceAccountName"] = draw(st.sampled_from(SERVICE_ACCOUNTS))
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"pod-{index}", "namespace": draw(st.sampled_from(namespaces)), "labels": labels},
                "spec": spec,
                "status": {"podIP": pod_ip(index)},
            }
        )
    services = []
    for name in draw(st.lists(st.sampled_from(SERVICES), max_size=2, unique=True)):
        namespace = draw(st.sampled_from(namespaces))
        svc_spec: Obj = {"ports": [{"port": 80}]}
        selector = draw(st.sampled_from(({"app": "web"}, {"app": "db"}, None)))
        if selector is not None:
            svc_spec["selector"] = selector
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": svc_spec,
            }
        )
        services.append((name, namespace))
    return objects, namespaces, services


# --- flows ----------------------------------------------------------------------------------------


@st.composite
def flow_for(draw: Draw, pods: dict[str, list[tuple[int, str]]], others: list[str]) -> Flow:
    """A flow between pods mostly (with the node and world addresses sometimes), on the ports the
    policies use or the destination declares, usually carrying a request of the protocol that
    port's parser expects."""
    addresses = st.one_of(st.sampled_from(sorted(pods)), st.sampled_from(sorted(pods)), st.sampled_from(others))
    src, dst = draw(addresses), draw(addresses)
    declared = pods.get(dst) or []
    if declared and draw(st.integers(0, 2)) == 0:
        port, name = draw(st.sampled_from(declared))
        protocol = Protocol[name]
    else:
        protocol = draw(st.sampled_from((Protocol.TCP, Protocol.TCP, Protocol.TCP, *PROTOCOLS)))
        ports = (0, 3, 8) if protocol is Protocol.ICMP else (80, 80, 80, 9092, 9092, 53, *PORTS)
        port = draw(st.sampled_from(ports))
    l7: L7Request | None = None
    if protocol is not Protocol.ICMP and draw(st.booleans()):
        http = st.builds(
            HttpRequest,
            st.sampled_from(("GET", "POST", "DELETE")),
            st.sampled_from(("/", "/api/x", "/login")),
            st.just(""),
            st.sampled_from(((), (("X-Token", "yes"),))),
        )
        kafka = st.builds(
            KafkaRequest, st.sampled_from((0, 1, 3)), st.just(0), st.just(""), st.sampled_from(("orders", "logs"))
        )
        dns = st.builds(DnsRequest, st.sampled_from(("www.example.com", "a.b", "x.org")))
        expected = {80: http, 9092: kafka, 53: dns}.get(port)
        l7 = draw(expected if expected is not None and draw(st.integers(0, 4)) else st.one_of(http, kafka, dns))
    return Flow(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, port, l7)


# --- cases ----------------------------------------------------------------------------------------

_CASE_DIR = Path(tempfile.mkdtemp(prefix="netpolc-hypothesis-"))
atexit.register(shutil.rmtree, _CASE_DIR, ignore_errors=True)


@dataclass(frozen=True)
class GeneratedCase:
    """One generated input set (as YAML and as loaded) with flows to ask about it."""

    yaml: str
    inputs: Inputs
    flows: tuple[Flow, ...]


def load_yaml(text: str) -> Inputs:
    """Load YAML text through the real loader (files are named by content, so reruns reuse them)."""
    path = _CASE_DIR / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        path.write_text(text)
    return load_inputs([str(path)])


@st.composite
def cases(draw: Draw, max_flows: int = 20) -> GeneratedCase:
    objects, namespaces, services = draw(cluster_objects())
    policies = []
    for index in range(draw(st.sampled_from((1, 2, 3, 4, 0)))):
        if draw(st.integers(0, 2)) == 0:
            policies.append(draw(network_policy(f"np-{index}", namespaces)))
        else:
            policies.append(draw(cilium_policy(f"cnp-{index}", namespaces, services)))
    if draw(st.booleans()):
        policies.append(draw(l7_policy("l7", namespaces)))
    text = yaml.safe_dump_all([*objects, *policies], sort_keys=False)
    inputs = load_yaml(text)
    pods = {ip: [(p.port, p.protocol) for p in ep.ports] for ep in inputs.cluster.endpoints for ip in ep.ips}
    flows = draw(st.lists(flow_for(pods, [DEFAULT_NODE_IP, *EXTERNAL]), min_size=max_flows, max_size=max_flows))
    return GeneratedCase(text, inputs, tuple(flows))


def inputs_and_flows(max_flows: int = 20) -> st.SearchStrategy[tuple[Inputs, list[Flow]]]:
    """(Inputs, flows) for property tests that do not need the YAML text."""
    return cases(max_flows).map(lambda case: (case.inputs, list(case.flows)))
