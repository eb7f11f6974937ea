"""Read the emitted artifact files back into typed models (DESIGN.md §5): the verifier never trusts the
compiler's in-memory objects, it reads what a kernel would get.

- :func:`read_iptables` / :func:`load_iptables`: iptables-restore input or iptables-save output -> :class:`Ruleset`
- :func:`read_services`: ``services.v4`` (kube-proxy's nat table) -> :class:`Ruleset`
- :func:`read_ipsets` / :func:`load_ipsets`: ipset restore input or ipset save output -> ``{name: IpSet}``

Errors are :class:`ArtifactError` (a :class:`compiler.source.NetpolcError`) with file:line:column.
"""

from verifier.artifacts.ipsets import IpSet, SetMember
from verifier.artifacts.iptables import load_ipsets, load_iptables, read_ipsets, read_iptables, read_services
from verifier.artifacts.models import ArtifactError, Chain, IptRule, Ruleset, Table

__all__ = [
    "ArtifactError",
    "Chain",
    "IpSet",
    "IptRule",
    "Ruleset",
    "SetMember",
    "Table",
    "load_ipsets",
    "load_iptables",
    "read_ipsets",
    "read_iptables",
    "read_services",
]
