"""The identity-based IR (DESIGN.md §1): model, lowering of each input kind, builder, evaluator.

    from compiler.ir import build_ir, IREvaluator
    ir = build_ir(load_inputs(paths), Profile.CILIUM)
    decision = IREvaluator(ir).evaluate(flow)
"""

from compiler.ir.build import build_ir, policy_cidrs
from compiler.ir.evaluate import IREvaluator, matrix
from compiler.ir.model import (
    IR,
    Action,
    CIDRMatch,
    EndpointPolicy,
    L7Spec,
    Peer,
    PortMatch,
    Remote,
    RemoteKind,
    Rule,
)

__all__ = [
    "IR",
    "Action",
    "CIDRMatch",
    "EndpointPolicy",
    "IREvaluator",
    "L7Spec",
    "Peer",
    "PortMatch",
    "Remote",
    "RemoteKind",
    "Rule",
    "build_ir",
    "matrix",
    "policy_cidrs",
]
