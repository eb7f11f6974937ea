"""What a lint rule can look at: the loaded inputs, their identities, and each policy lowered.

Everything is computed once per run and shared by the rules. The lowering is the IR's own
(compiler/ir/lower_*.py), so a rule about "selects nothing" means exactly what the compiler and
the verifier mean by selection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from compiler.cluster import Endpoint
from compiler.flow import Profile
from compiler.identity import IdentityTable, allocate
from compiler.inputs import Inputs, Policy
from compiler.inputs.ciliumpolicy import CiliumPolicy
from compiler.ir.build import build_ir, policy_cidrs
from compiler.ir.lower_cilium import CiliumContext, lower_cilium_policy
from compiler.ir.lower_k8s import lower_network_policy
from compiler.ir.model import IR, SubjectRules
from compiler.labels import LabelFilter, Selector

#: Cilium's cluster-wide identity limit for locally allocated identities (reference/cilium.md §3.2).
IDENTITY_LIMIT = 65535


@dataclass(frozen=True)
class LintOptions:
    """Options rules read (command line or ``[tool.netpolc]``)."""

    profile: Profile = Profile.CILIUM
    platform: str | None = None  # "aks-managed" enables the managed-platform rules
    policy_map_max: int = 16384  # reference/cilium.md §1.1 (bpf-policy-map-max)
    identity_limit: int = IDENTITY_LIMIT
    label_filter: LabelFilter = field(default_factory=LabelFilter.default)


@dataclass(frozen=True)
class LoweredPolicy:
    """One policy with the subject rules it lowers into (a CNP with ``specs`` gives several)."""

    policy: Policy
    subjects: tuple[SubjectRules, ...]


class LintContext:
    """The inputs of one lint run and what is derived from them, computed lazily once."""

    def __init__(self, inputs: Inputs, options: LintOptions) -> None:
        self.inputs = inputs
        self.options = options

    @property
    def profile(self) -> Profile:
        return self.options.profile

    @cached_property
    def identities(self) -> IdentityTable:
        return allocate(self.inputs.cluster, self.profile, self.options.label_filter, policy_cidrs(self.inputs))

    @cached_property
    def endpoint_identities(self) -> frozenset[int]:
        return frozenset(i.number for i in self.identities.identities() if i.endpoints)

    def select(self, selector: Selector) -> frozenset[int]:
        return self.identities.select(selector)

    def select_endpoints(self, selector: Selector) -> frozenset[int]:
        """The identities of endpoints (not host, world or CIDRs) a selector picks."""
        return self.identities.select(selector) & self.endpoint_identities

    @cached_property
    def lowered(self) -> tuple[LoweredPolicy, ...]:
        pods = self.endpoint_identities if self.profile is Profile.K8S else None
        cilium = CiliumContext(self.inputs.cluster, self.select)
        out = []
        for policy in self.inputs.policies:
            if isinstance(policy, CiliumPolicy):
                subjects = tuple(lower_cilium_policy(policy, cilium))
            else:
                subjects = (lower_network_policy(policy, self.select, pods),)
            out.append(LoweredPolicy(policy, subjects))
        return tuple(out)

    @cached_property
    def ir(self) -> IR:
        """The built IR (raises the builder's InputError, e.g. on conflicting L7 parsers)."""
        return build_ir(self.inputs, self.profile, self.options.label_filter)

    def endpoints_of(self, identities: frozenset[int]) -> list[Endpoint]:
        keys = [k for n in sorted(identities) for k in self.identities.by_number(n).endpoints]
        found = (self.inputs.cluster.endpoint(k) for k in sorted(keys))
        return [ep for ep in found if ep is not None]

    def policies(self) -> Iterator[Policy]:
        yield from self.inputs.policies
