"""The composition lemma for an iptables ruleset: when its verdict is the conjunction of an
egress half and an ingress half, recognised from the artifact's structure.

A half-flow proof (verifier/proofs/slices.py, half_slices) compares the two datapaths one endpoint and one
direction at a time. eBPF is built that way (the source's egress map, then the destination's
ingress map). An iptables ruleset is when its structure says so, which :func:`phases` checks:

- for a forwarded or proxied packet the hooks run nothing but one mangle chain (PREROUTING's
  only rule jumps to it) and one filter chain ``T`` (INPUT's and FORWARD's only rule jumps to
  it); raw PREROUTING and the other mangle hooks are empty; every such built-in chain's policy
  is ACCEPT;
- ``T`` is a *prefix* (rules a NEW first packet never matches, and unconditional MARKs), an
  *egress block* (rules whose match conditions test only the source address, directly or
  through unconditional calls into chains that do), an *ingress block* (the same for the
  destination), and a *tail* of ACCEPT rules;
- the mangle chain is a prefix, an egress block, then an ingress block, nothing after;
- no filter rule reads or writes mark bits outside those the prefix resets, nor the conntrack
  mark or a socket, so the filter does not depend on what mangle did to the packet.

What the structure cannot show — that each block, started in the prefix's state, only drops
(filter) or redirects with TPROXY (mangle) and otherwise returns in that same state — is checked
on every half formula as it is built (:meth:`verifier.encoding.iptables.IptablesEncoding.half`).
Given both, a packet is dropped iff a filter block drops it, and else redirected to the first
TPROXY port of the mangle blocks in order (egress first): the composition eBPF has, so equal
halves give equal outcomes. Anything else makes :func:`phases` return the reason, and the proof
falls back to whole-flow slices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.artifacts.models import (
    Chain,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    Goto,
    IptRule,
    Jump,
    MarkMatch,
    MarkTarget,
    Ruleset,
    SetMatch,
    SocketMatch,
    Verdict,
)

SIDES = ("src", "dst")  # the egress block dispatches on the source, the ingress block on the destination


@dataclass(frozen=True)
class Block:
    """Rules of one table's phase chain, run in order as one pseudo-chain."""

    table: str
    chain: str
    rules: tuple[IptRule, ...]


@dataclass(frozen=True)
class Phases:
    """The recognised layout: per table, the prefix and the egress and ingress blocks."""

    filter_prefix: Block
    filter_halves: Mapping[str, Block]  # "src"/"dst" → block
    filter_mask: int  # the mark bits the filter prefix resets (all the filter touches)
    mangle_prefix: Block | None
    mangle_halves: Mapping[str, Block]


def phases(ruleset: Ruleset) -> Phases | str:
    """The two-phase layout of ``ruleset``, or why it is not one."""
    tables = ruleset.tables
    if "filter" not in tables:
        return "no filter table"
    for table, hooks in (("raw", ("PREROUTING",)), ("mangle", ("INPUT", "FORWARD", "POSTROUTING"))):
        for hook in hooks:
            chain = tables[table].chains.get(hook) if table in tables else None
            if chain is not None and (chain.rules or chain.policy == "DROP"):
                return f"{table} {hook} is not empty"
    filter_chains = tables["filter"].chains
    top = _only_jump(filter_chains, "INPUT")
    if top is None or _only_jump(filter_chains, "FORWARD") != top:
        return "filter INPUT and FORWARD do not both only jump to one chain"
    split = _split(filter_chains, top, tail_ok=True)
    if isinstance(split, str):
        return f"filter {top}: {split}"
    prefix, halves = split
    mask = 0
    for rule in prefix.rules:
        if isinstance(rule.target, MarkTarget):
            mask |= rule.target.mask
    touched = _mark_bits(filter_chains)
    if touched is None or touched & ~mask:
        return f"filter rules read or write marks beyond the bits {top} resets ({mask:#x})"
    mangle_prefix: Block | None = None
    mangle_halves: dict[str, Block] = {}
    if "mangle" in tables and tables["mangle"].chains.get("PREROUTING") is not None \
            and tables["mangle"].chains["PREROUTING"].rules:
        mangle_chains = tables["mangle"].chains
        entry = _only_jump(mangle_chains, "PREROUTING")
        if entry is None:
            return "mangle PREROUTING does not only jump to one chain"
        msplit = _split(mangle_chains, entry, tail_ok=False)
        if isinstance(msplit, str):
            return f"mangle {entry}: {msplit}"
        mangle_prefix, mangle_halves = msplit
        if list(mangle_halves) not in (["src", "dst"], ["src"], ["dst"], []):
            return f"mangle {entry}: the ingress block comes before the egress block"
    return Phases(prefix, halves, mask, mangle_prefix, mangle_halves)


def _only_jump(chains: Mapping[str, Chain], builtin: str) -> str | None:
    """The chain ``builtin``'s one unconditional rule jumps to (its policy ACCEPT), else None."""
    chain = chains.get(builtin)
    if chain is None or chain.policy == "DROP" or len(chain.rules) != 1:
        return None
    rule = chain.rules[0]
    if _conditional(rule) or not isinstance(rule.target, Jump):
        return None
    return rule.target.chain


def _conditional(rule: IptRule) -> bool:
    return any(x is not None for x in (rule.protocol, rule.source, rule.destination, rule.in_interface,
                                       rule.out_interface)) or any(not isinstance(m, CommentMatch)
                                                                   for m in rule.matches)


def _split(chains: Mapping[str, Chain], name: str, tail_ok: bool) -> tuple[Block, dict[str, Block]] | str:
    rules = chains[name].rules if name in chains else ()
    at = 0
    while at < len(rules) and _prefix_rule(rules[at]):
        at += 1
    prefix = Block("", name, rules[:at])
    halves: dict[str, Block] = {}
    sides = [_side(chains, rule, set()) for rule in rules]
    while at < len(rules):
        side = sides[at]
        if side is None or side in halves:
            break
        start = at
        while at < len(rules) and sides[at] == side:
            at += 1
        halves[side] = Block("", name, rules[start:at])
    for rule in rules[at:]:
        if not (tail_ok and isinstance(rule.target, Verdict) and rule.target.name == "ACCEPT"):
            return f"rule at line {rule.line} is neither prefix, a dispatch on one address, nor an ACCEPT tail"
    return prefix, halves


def _prefix_rule(rule: IptRule) -> bool:
    """A rule that can only matter before the blocks: a state test (conntrack, mark, socket —
    whether a NEW first packet matches is decided when the half is built) or an unconditional
    MARK."""
    if any(isinstance(m, ConntrackMatch | SocketMatch | MarkMatch) for m in rule.matches):
        return True
    return isinstance(rule.target, MarkTarget) and not _conditional(rule)


def _side(chains: Mapping[str, Chain], rule: IptRule, seen: set[str]) -> str | None:
    """The one address field ("src"/"dst") a dispatch rule tests, following unconditional calls
    (None for a rule that does not call a chain)."""
    if not isinstance(rule.target, Jump | Goto):
        return None
    sides: set[str] = set()
    if rule.source is not None:
        sides.add("src")
    if rule.destination is not None:
        sides.add("dst")
    for match in rule.matches:
        if isinstance(match, SetMatch) and match.flags:
            sides.add(match.flags[0])
    if not sides:
        target = rule.target
        if target.chain in seen or target.chain not in chains:
            return None
        seen.add(target.chain)
        inner = {_side(chains, r, seen) for r in chains[target.chain].rules
                 if not (isinstance(r.target, Verdict) and r.target.name == "RETURN")}
        sides = {s for s in inner if s is not None}
        if None in inner or not sides:
            return None
    return sides.pop() if len(sides) == 1 else None


def _mark_bits(chains: Mapping[str, Chain]) -> int | None:
    """Every mark bit a rule of ``chains`` tests or sets (None: it uses conntrack marks or sockets)."""
    bits = 0
    for chain in chains.values():
        for rule in chain.rules:
            if isinstance(rule.target, MarkTarget):
                bits |= rule.target.mask | rule.target.value
            elif isinstance(rule.target, ConnmarkTarget):
                return None
            for match in rule.matches:
                if isinstance(match, MarkMatch):
                    bits |= match.mask
                elif isinstance(match, ConnmarkMatch | SocketMatch):
                    return None
    return bits
