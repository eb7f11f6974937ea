"""Proxy ports and redirect priorities shared by every target, so iptables TPROXY and the eBPF
policy map send a redirected flow to the same port (issue: "both targets agree").

Cilium allocates one proxy port per listener type from ``proxy-portrange-min`` (10000) up to
``proxy-portrange-max`` (20000), picking free ports at run time (reference/cilium.md §5.1). The
compiler needs the same port on every run, so listener types get fixed ports in this range, in
the order below. Priorities are Cilium 1.18's ``proxy_port_priority`` values (§1.5).
"""

from __future__ import annotations

from compiler.flow import Direction

PROXY_PORT_MIN = 10000  # proxy-portrange-min (reference/cilium.md §5.1)
PROXY_PORT_MAX = 20000  # proxy-portrange-max

#: Listener types in port order: cilium-dns-egress → 10000, cilium-http-egress → 10001, ...
LISTENERS: tuple[str, ...] = (
    "cilium-dns-egress",
    "cilium-http-egress",
    "cilium-http-ingress",
    "cilium-proxylib-egress",
    "cilium-proxylib-ingress",
)

#: Stored proxy_port_priority per parser = 128 - listener priority (reference/cilium.md §1.5).
PRIORITY = {"http": 27, "kafka": 22, "proxylib": 17, "tls": 12, "dns": 7, "crd": 2}


def listener(parser: str, direction: Direction) -> str:
    """The Cilium listener type that serves an L7 parser in a direction.

    HTTP (and gRPC, which is HTTP/2) has its own Envoy listeners; DNS goes to the agent's DNS
    proxy (egress only); Kafka and every other parser run on Envoy's proxylib (TCP) chain.
    """
    if parser == "dns":
        if direction is not Direction.EGRESS:
            raise ValueError("DNS rules are egress-only")
        return "cilium-dns-egress"
    kind = "http" if parser == "http" else "proxylib"
    return f"cilium-{kind}-{direction.value}"


def proxy_port(parser: str, direction: Direction) -> int:
    """The fixed proxy port of the listener serving ``parser`` in ``direction``."""
    return PROXY_PORT_MIN + LISTENERS.index(listener(parser, direction))


def priority(parser: str) -> int:
    """``proxy_port_priority`` for a redirect to ``parser`` (higher wins on merge)."""
    return PRIORITY.get(parser, PRIORITY["proxylib"])
