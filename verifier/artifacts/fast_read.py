"""Fast readers for the canonical text netpolc writes: the same models as the lark readers, many times faster.

Why: a verify run reads ``rules.v4`` and ``ipsets.v4`` before anything else, and at 20,000 pods they are 9 MB and
5 MB; the lark readers (grammar/iptables_save.py, grammar/ipset.py) take seconds on each. The compiler writes
them in one fixed form (compiler/targets/iptables/render.py): single blanks, ``*table``, ``:CHAIN POLICY [0:0]``,
``-A CHAIN OPTIONS``, ``COMMIT``, ``create NAME TYPE family F hashsize N maxelem N``, ``add NAME ENTRY [nomatch]``
and ``#`` comments. Those lines are read here, line by line, with no parser.

Why the result is the lark result (``==``, and the same line numbers, raw text and columns):

- Only lines of those shapes are read. Any other line -- a counters prefix, ``-I``/``-N``/``-P``, a tab or a
  double blank, a CR, a word the grammar would lex as a stray WORD, an unterminated quote -- makes the whole text
  go to the lark reader (the readers return None). So is anything the Transformer refuses: every check is run by
  the Transformer's own code, and its ArtifactError (or OptionError) means "let lark read it". A fast result is
  therefore only returned for text the lark reader accepts, and every error message still comes from lark.
- Words are classified with the grammar's own terminal regexes (WORD, BANG, FLAG, OPTION, OPTION2; EXIST,
  CREATE_OPTION, CREATE_FLAG), taken from a Lark object of the same .lark files, not from copied tables.
- The meaning of a rule is the Transformer's: the options are grouped by its ``_RuleBuilder``; matches and
  targets come from ``build_match``/``build_target``, addresses and interfaces from the builder's own methods;
  tables are checked and assembled by ``IptablesSaveTransformer.table``; ipsets are created by
  ``IpsetTransformer`` and entries that are not a plain IPv4 address or network are expanded by its ``_entries``.

What is new is only sharing of work: a rule's option tail (the text after ``-A CHAIN``) is read once per distinct
tail, and tails that differ only in the chain they end jumping to share the rest; the grouping plan is made once
per option *shape* (names, negations, ``-m`` modules, ``-p`` and ``-j`` targets); each match, target, address and
ipset entry is built once per distinct value. All of these are pure functions of their keys, and the results are
frozen dataclasses, so sharing them between rules changes nothing. Rules themselves are never shared: each line
gets its own :class:`IptRule` (simulators key traces by rule identity). The cyclic garbage collector is paused
while a text is read (see :func:`_bulk`).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Network
from typing import Any, Literal, NamedTuple, cast

from lark import Lark, Token

from grammar.ipset import GRAMMAR as IPSET_GRAMMAR
from grammar.ipset import IpsetTransformer, _Set
from grammar.iptables_save import GRAMMAR as IPTABLES_GRAMMAR
from grammar.iptables_save import (
    OPTION_ALIASES,
    IptablesSaveTransformer,
    _ChainDecl,
    _merge_into,
    _RuleBuilder,
    unquote,
)
from verifier.artifacts.ipsets import NET_TYPES, PORT_TYPES, IpSet, SetMember
from verifier.artifacts.iptables_options import TARGET_OPTIONS, Opt, OptionError, build_match, build_target
from verifier.artifacts.models import (
    AddressMatch,
    ArtifactError,
    Family,
    Goto,
    InterfaceMatch,
    IPNetwork,
    IptRule,
    Jump,
    Match,
    PortMatch,
    ProtocolMatch,
    Ruleset,
    Target,
)
from verifier.artifacts.values import parse_protocol


class _NotCanonical(Exception):
    """A line the fast reader does not recognise with certainty: the whole text goes to the lark reader."""


_BANG = -1
"""Arity marker for ``!``."""


@contextmanager
def _bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a reader runs: a multi-megabyte file makes ~10^6 small objects,
    none of them part of a reference cycle, and every burst of allocations would otherwise start collections
    that walk the whole growing heap (a third of the reading time). The previous state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------------------------------------------
# The grammars' own terminals


@dataclass(frozen=True)
class _Terminals:
    """Compiled terminal regexes of one .lark grammar, by terminal name."""

    patterns: dict[str, re.Pattern[str]]

    def fullmatch(self, name: str, text: str) -> bool:
        return self.patterns[name].fullmatch(text) is not None


@cache
def _terminals(grammar: str) -> _Terminals:
    """The terminals of ``grammar`` exactly as lark compiles them (the basic lexer only serves to build them)."""
    lark = Lark.open(grammar, parser="lalr", lexer="basic")
    return _Terminals({t.name: re.compile(t.pattern.to_regexp()) for t in lark.terminals})


def _rule_terminals() -> _Terminals:
    return _terminals(str(IPTABLES_GRAMMAR))


def _ipset_terminals() -> _Terminals:
    return _terminals(str(IPSET_GRAMMAR))


_ARITY: dict[str, int | None] = {}
"""Word -> values it takes as an option (0 a FLAG, 1 an OPTION, 2 an OPTION2, ``_BANG``), None for a stray word."""
_ARITY_KEPT = 4096


def _arity(word: str) -> int | None:
    """What the iptables grammar lexes ``word`` as where an option is expected (memoised; few distinct words).

    ``"x"`` stands for a value: the OPTION terminals are ``NAME BLANKS VALUE [BLANKS VALUE]``. A word that more
    than one terminal would take is not classified (the grammar's terminals are disjoint, so this never happens).
    """
    if word in _ARITY:
        return _ARITY[word]
    terminals = _rule_terminals()
    candidates = ((_BANG, "BANG", word), (0, "FLAG", word), (1, "OPTION", f"{word} x"), (2, "OPTION2", f"{word} x x"))
    kinds = [arity for arity, name, text in candidates if terminals.fullmatch(name, text)]
    found = kinds[0] if len(kinds) == 1 else None
    if len(_ARITY) >= _ARITY_KEPT:  # stray words of many bad files must not pile up
        _ARITY.clear()
    _ARITY[word] = found
    return found


# ---------------------------------------------------------------------------------------------------------------
# iptables: one rule's options


class _Item(NamedTuple):
    """One option of a rule tail: ``!`` before it, canonical name, unquoted values (hashable: a memo key)."""

    negated: bool
    name: str
    values: tuple[str, ...]


def _opt(item: _Item) -> Opt:
    """The option as the Transformer builds it (position 0: positions only go into error messages)."""
    return Opt(item.name, item.negated, item.values, 0, 0)


class _Tail(NamedTuple):
    """A rule tail as the grammar lexes it: its options, where each starts in the tail, and its shape."""

    items: list[_Item]
    offsets: list[int]
    shape: tuple[tuple[bool, str, str | None], ...]


_OTHER_BLANK = re.compile(r"[^\S ]")
"""Whitespace other than a blank: a tab, a CR, ... -- never in canonical text."""
_PLAIN_WORD = re.compile(r'[^\s"]+')
"""A word without quotes (so without escapes): what the grammar's WORD regex takes whole."""


def _words(tail: str) -> list[str]:
    """The words of a rule tail exactly as the grammar's WORD terminal splits them, if single blanks separate them
    (else :class:`_NotCanonical`). Without backslashes, quotes pair up in order, so ``str.split`` finds the same
    words as the WORD regex (much faster); with backslashes (escapes inside quotes) the WORD regex itself runs."""
    if _OTHER_BLANK.search(tail):
        raise _NotCanonical
    if '"' not in tail:
        words = tail.split(" ")
    elif "\\" in tail:
        words = _rule_terminals().patterns["WORD"].findall(tail)
        if " ".join(words) != tail:
            raise _NotCanonical
    else:
        pieces = tail.split('"')
        if len(pieces) % 2 == 0:
            raise _NotCanonical  # an unterminated quote
        words = pieces[0].split(" ")
        for index in range(1, len(pieces), 2):
            rest = pieces[index + 1].split(" ")
            words[-1] += f'"{pieces[index]}"{rest[0]}'
            words += rest[1:]
    if "" in words:
        raise _NotCanonical  # a blank at either end, or two in a row
    return words


_UNSEEN = -2
_UNREAD = object()


def _tail(tail: str) -> _Tail:
    """The options of a rule tail, as the grammar lexes them, and its shape (what decides how they group).

    An option's values are the words after it (as many as its terminal takes). Raises :class:`_NotCanonical`
    for anything the Transformer would reject here (a stray word, a ``!`` not before an option,
    ``NAME ! VALUE``) or that is not canonical (see :func:`_words`).
    """
    words = _words(tail) if tail else []
    count = len(words)
    items: list[_Item] = []
    offsets: list[int] = []
    shape: list[tuple[bool, str, str | None]] = []
    negated = False
    index = offset = 0  # the word and the character where the next option starts
    while index < count:
        word = words[index]
        arity = _ARITY.get(word, _UNSEEN)
        if arity == _UNSEEN:
            arity = _arity(word)
        if arity is None or (arity == _BANG and negated):
            raise _NotCanonical
        if arity == _BANG:
            negated = True
            index += 1
            offset += 2
            continue
        end = index + 1 + arity
        if end > count or (arity and words[index + 1] == "!"):  # the Transformer: "'NAME ! VALUE' ... not accepted"
            raise _NotCanonical
        name = OPTION_ALIASES.get(word, word)
        if arity == 1:
            value = words[index + 1]
            values: tuple[str, ...] = (_unquote(value) if '"' in value else value,)
            width = len(word) + len(value) + 2
        else:
            raw = words[index + 1 : end]
            values = tuple([_unquote(value) if '"' in value else value for value in raw])
            width = len(word) + 1 + sum(len(value) + 1 for value in raw)
        items.append(_Item(negated, name, values))
        offsets.append(offset)
        structural = name in _STRUCTURAL and (name != "-j" or values[0] in TARGET_OPTIONS)
        shape.append((negated, name, values[0] if structural else None))
        index = end
        offset += width
        negated = False
    if negated:
        raise _NotCanonical  # "'!' at the end of the rule negates nothing"
    return _Tail(items, offsets, tuple(shape))


_STRUCTURAL = frozenset({"-m", "-p", "-j"})
"""Options whose value decides how a rule's options group (see :class:`_Plan`); for ``-j`` only when it names a
target that takes options."""


def _unquote(word: str) -> str:
    """``unquote`` of the Transformer: without a backslash (an escape inside quotes) it drops every quote."""
    return word.replace('"', "") if "\\" not in word else unquote(word)


@dataclass(frozen=True)
class _Plan:
    """How the options of one shape group (indices into the rule's items), as ``_RuleBuilder.add`` grouped them.

    Grouping depends only on option names, negations, ``-m`` modules, the ``-p`` protocol and which target
    that takes options ``-j`` names -- the shape -- so one plan serves every rule of that shape.
    """

    protocol: ProtocolMatch | None
    headers: tuple[tuple[int, int], ...]
    """(slot, item) of each ``-s``, ``-d``, ``-i``, ``-o``: slots 0-3 in that order, as IptRule's fields."""
    groups: tuple[tuple[str, tuple[int, ...]], ...]
    target: int | None
    target_kind: Literal["goto", "jump", "target"]
    target_options: tuple[int, ...]


_HEADER_SLOTS = ("-s", "-d", "-i", "-o")
_PLANS: dict[tuple[int, tuple[Any, ...]], _Plan] = {}
_PLANS_KEPT = 4096


def _plan(tail: _Tail, owner: IptablesSaveTransformer) -> _Plan:
    """The plan of the tail's shape (memoised), found by running the Transformer's rule builder on it."""
    key = (owner.family, tail.shape)
    found = _PLANS.get(key)
    if found is None:
        found = _make_plan(tail.items, owner)
        if len(_PLANS) >= _PLANS_KEPT:
            _PLANS.clear()
        _PLANS[key] = found
    return found


def _make_plan(items: list[_Item], owner: IptablesSaveTransformer) -> _Plan:
    """Group ``items`` with ``_RuleBuilder.add`` (the column of each Opt carries its item index) and compute the
    protocol as ``_RuleBuilder.build`` does."""
    builder = _RuleBuilder(owner, 0)
    for index, item in enumerate(items):
        builder.add(Opt(item.name, item.negated, item.values, 0, index))
    header = {name: opt.column for name, opt in builder.header.items()}
    protocol = None
    if "-p" in builder.header:
        opt = builder.header["-p"]
        number = parse_protocol(opt.value)
        if number == 0 and opt.negated:
            raise _NotCanonical  # "'! -p all' matches nothing"
        protocol = ProtocolMatch(number, opt.negated) if number else None
    target = builder.target
    kind: Literal["goto", "jump", "target"] = "jump"
    if target is not None and target.name == "-g":
        kind = "goto"
    elif target is not None and target.value in TARGET_OPTIONS:
        kind = "target"
    return _Plan(
        protocol,
        tuple((slot, header[name]) for slot, name in enumerate(_HEADER_SLOTS) if name in header),
        tuple((group.module, tuple(opt.column for opt in group.options.values())) for group in builder.groups),
        None if target is None else target.column,
        kind,
        tuple(opt.column for opt in builder.target_options.values()),
    )


_Head = tuple[
    ProtocolMatch | None, AddressMatch | None, AddressMatch | None, InterfaceMatch | None, InterfaceMatch | None,
    tuple[Match, ...],
]  # fmt: skip
"""An IptRule's fields from ``protocol`` to ``matches``."""
_Fields = tuple[
    ProtocolMatch | None, AddressMatch | None, AddressMatch | None, InterfaceMatch | None, InterfaceMatch | None,
    tuple[Match, ...], Target | None,
]  # fmt: skip
"""An IptRule's fields after ``chain`` and before ``line``: ``protocol`` to ``target``."""


class _RuleReader:
    """Reads rule tails of one text into IptRule fields, sharing work between equal tails and values."""

    def __init__(self, owner: IptablesSaveTransformer) -> None:
        self.owner = owner
        self.family: Family = owner.family
        self.scratch = _RuleBuilder(owner, 0)
        self.tails: dict[str, tuple[_Fields, int]] = {}
        self.jumps: dict[tuple[str, str], tuple[_Head, int]] = {}
        self.headers: dict[tuple[bool, bool, tuple[str, ...]], object] = {}
        self.matches: dict[tuple[str, ProtocolMatch | None, tuple[_Item, ...]], Match] = {}
        self.targets: dict[tuple[str, ProtocolMatch | None, tuple[_Item, ...]], Target] = {}

    def rule(self, chain: str, tail: str, line: int, raw: str) -> IptRule:
        """The rule ``-A chain tail`` of line ``line``; the same object the Transformer builds."""
        found = self.tails.get(tail)
        if found is None:
            found = self.tails[tail] = self._read_tail(tail)
        fields, target_offset = found
        target_column = len(chain) + 5 + target_offset if target_offset >= 0 else 0  # after "-A CHAIN ", 1-based
        return IptRule(chain, *fields, line, raw, target_column)

    def _read_tail(self, tail: str) -> tuple[_Fields, int]:
        """The fields of a rule with this tail and its target's offset in the tail.

        Most tails end in ``-j CHAIN`` or ``-g CHAIN`` and many differ only there (one chain per identity or
        per CIDR). The target is then the rule's last option and a chain is no input to anything else (the
        builder only asks whether ``-j`` names a target with options), so tails with the same beginning share
        every field but the target. That is only assumed after a full read of a tail with the same text before
        the target found the target there.
        """
        head, _, jumped = tail.rpartition(" ")
        before, verb = head[:-2], head[-2:]  # tail == before + verb + " " + jumped
        if verb not in ("-j", "-g") or before[-1:] not in ("", " ") or jumped == "!" or (
                not _PLAIN_WORD.fullmatch(jumped)) or (verb == "-j" and jumped in TARGET_OPTIONS):  # fmt: skip
            return self._fields(_tail(tail))
        key = (before, verb)
        shared = self.jumps.get(key)
        if shared is None:
            fields, offset = self._fields(_tail(tail))
            if offset != len(before):
                return fields, offset  # "-j"/"-g" was a value there, not the target
            shared = self.jumps[key] = fields[:-1], offset
        shared_fields, offset = shared
        target: Target = Goto(jumped) if verb == "-g" else Jump(jumped)
        return (*shared_fields, target), offset

    def _fields(self, tail: _Tail) -> tuple[_Fields, int]:
        """The fields of a rule with this tail, as ``_RuleBuilder.build`` computes them, and its target's offset."""
        plan = _plan(tail, self.owner)
        items = tail.items
        header: list[Any] = [None, None, None, None]  # -s -d (AddressMatch), -i -o (InterfaceMatch)
        for slot, index in plan.headers:
            header[slot] = self._header(items[index], slot)
        matches: list[Match] = []
        for module, indices in plan.groups:
            options = (items[indices[0]],) if len(indices) == 1 else tuple([items[i] for i in indices])
            match = self._match(module, options, plan.protocol)
            if isinstance(match, PortMatch):
                _merge_into(matches, match)  # which only ever folds port matches
            else:
                matches.append(match)
        target = self._target(items, plan)
        offset = tail.offsets[plan.target] if plan.target is not None else -1
        return (plan.protocol, header[0], header[1], header[2], header[3], tuple(matches), target), offset

    def _header(self, item: _Item, slot: int) -> AddressMatch | InterfaceMatch | None:
        """``-s``/``-d`` (slots 0, 1: an AddressMatch) or ``-i``/``-o`` (2, 3: an InterfaceMatch), by the
        builder's own ``_address``/``_interface``, which give the same for ``-s`` and ``-d`` (``-i``, ``-o``)."""
        key = (slot < 2, item.negated, item.values)
        found = self.headers.get(key, _UNREAD)
        if found is _UNREAD:
            read = self.scratch._address if slot < 2 else self.scratch._interface
            found = self.headers[key] = read(_opt(item))
        return cast(AddressMatch | InterfaceMatch | None, found)

    def _match(self, module: str, options: tuple[_Item, ...], protocol: ProtocolMatch | None) -> Match:
        key = (module, protocol, options)
        found = self.matches.get(key)
        if found is None:
            found = self.matches[key] = build_match(module, {o.name: _opt(o) for o in options}, protocol,
                                                    self.family)  # fmt: skip
        return found

    def _target(self, items: list[_Item], plan: _Plan) -> Target | None:
        if plan.target is None:
            return None
        name = items[plan.target].values[0]
        if plan.target_kind == "goto":
            return Goto(name)
        if plan.target_kind == "jump":
            return Jump(name)
        options = tuple([items[i] for i in plan.target_options])
        key = (name, plan.protocol, options)
        found = self.targets.get(key)
        if found is None:
            found = self.targets[key] = build_target(name, {o.name: _opt(o) for o in options}, plan.protocol,
                                                     self.family)  # fmt: skip
        return found


# ---------------------------------------------------------------------------------------------------------------
# iptables: the file

_TABLE = re.compile(r"\*[A-Za-z0-9_]+")
_CHAIN_DECL = re.compile(r':([^\s"]+) (ACCEPT|DROP|-) \[[0-9]+:[0-9]+\]')
_APPEND = re.compile(r'-A ([^\s"]+)(?: (.+))?')
_CHAIN_NAME_MAX = 28  # as grammar/iptables_save.py


def read_iptables_fast(text: str, path: str, family: Family, tables: frozenset[str]) -> Ruleset | None:
    """``parse_iptables(text, family, path, tables)`` for canonical text; None when the text is not canonical or
    the lark reader would report an error (then the caller runs the lark reader)."""
    owner = IptablesSaveTransformer(family)
    owner.begin(path, "", tables)  # raw lines are taken here, not from the Transformer
    try:
        with _bulk():
            return _read_rules(text, owner)
    except (_NotCanonical, ArtifactError, OptionError, ValueError):
        return None


def _read_rules(text: str, owner: IptablesSaveTransformer) -> Ruleset:
    """The file structure of iptables_save.lark (``*table``, statements, ``COMMIT``; comments and blank lines
    anywhere), with each table checked and assembled by the Transformer."""
    reader = _RuleReader(owner)
    done: list[Any] = []
    table: list[Any] | None = None  # the open table: its header token, then chain declarations and rules
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("-A ") and table is not None:
            match = _APPEND.fullmatch(line)
            if match is None or len(match[1]) > _CHAIN_NAME_MAX:
                raise _NotCanonical
            table.append(reader.rule(match[1], match[2] or "", number, line))
        elif not line or line[0] == "#":
            continue
        elif table is None:
            if not _TABLE.fullmatch(line):
                raise _NotCanonical
            table = [Token("TABLE", line, line=number, column=1)]
        elif line == "COMMIT":
            done.append(owner.table(table))
            table = None
        elif line[0] == ":":
            table.append(_chain_decl(line, number))
        else:
            raise _NotCanonical
    if table is not None:
        raise _NotCanonical  # COMMIT missing
    return owner.start(done)


def _chain_decl(line: str, number: int) -> _ChainDecl:
    """``:NAME POLICY [packets:bytes]``, checked as ``IptablesSaveTransformer.chain_decl`` checks it."""
    match = _CHAIN_DECL.fullmatch(line)
    if match is None:
        raise _NotCanonical
    name, policy = match[1], match[2]
    if len(name) > _CHAIN_NAME_MAX or name[0] in "-!":
        raise _NotCanonical
    return _ChainDecl(name, None if policy == "-" else policy, number, 1)


# ---------------------------------------------------------------------------------------------------------------
# ipsets

_ADD_REST = re.compile(r'([^\s"]+)( nomatch)?')
"""What follows the set name on an ``add`` line: the entry, then ``nomatch`` (the only add option written)."""
_CREATE = re.compile(r'create ([^\s"]+) ([^\s"]+)((?: [^\s"]+)*)')
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_ENTRY = re.compile(
    rf"({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12][0-9]|[1-9]))?)(?:,(tcp|udp|sctp|udplite):([0-9]{{1,5}}))?"
)
"""An IPv4 address (no leading zeros: what ``ip_address`` reads as written) with an optional prefix length 1-32 and
an optional ``PROTO:PORT`` of a protocol with ports."""

_SortKey = tuple[int, int, int, str, int]
_Members = dict[_SortKey, SetMember]
"""A set's members by :meth:`SetMember.sort_key`, which within one set is as unique as :attr:`SetMember.key`
(one family; all members have a port or none do) and hashes much faster (ints, not ip_network objects)."""
_Entries = tuple[tuple[_SortKey, SetMember], ...]
"""The members one ``add`` line makes, with their sort keys."""


def read_ipsets_fast(text: str, path: str) -> dict[str, IpSet] | None:
    """``parse_ipsets(text, path)`` for canonical text; None when the text is not canonical or the lark reader
    would report an error (then the caller runs the lark reader)."""
    try:
        with _bulk():
            return _IpsetReader(path).read(text)
    except (_NotCanonical, ArtifactError):
        return None


class _IpsetReader:
    """Replays ``create``/``add`` lines as ``IpsetTransformer`` does, sharing members between equal entries."""

    def __init__(self, path: str) -> None:
        self.owner = IpsetTransformer()
        self.owner.file = path
        self.sets: dict[str, _Set] = {}
        self.members: dict[str, _Members] = {}
        self.entries: dict[tuple[str, int], dict[str, _Entries]] = {}
        """(set type, family) -> what follows the set name on an add line -> the members it makes."""
        self.networks: dict[str, IPNetwork] = {}

    def read(self, text: str) -> dict[str, IpSet]:
        """The sets ``text`` leaves, by name, as ``IpsetTransformer.start`` returns them."""
        for number, line in enumerate(text.split("\n"), 1):
            if line.startswith("add "):
                self._add(line, number)
            elif not line or line[0] == "#" or line == "COMMIT":
                continue
            elif line.startswith("create "):
                self._create(line, number)
            else:
                raise _NotCanonical
        return {name: self._freeze(name) for name in sorted(self.sets)}

    def _freeze(self, name: str) -> IpSet:
        """``_Set.freeze``: the members sorted by :meth:`SetMember.sort_key`."""
        state, members = self.sets[name], self.members[name]
        ordered = tuple([members[key] for key in sorted(members)])
        return IpSet(state.name, state.type, state.family, ordered, state.options, state.line)

    def _create(self, line: str, number: int) -> None:
        """A ``create`` line, tokenised as ipset.lark lexes it and applied by the Transformer."""
        match = _CREATE.fullmatch(line)
        terminals = _ipset_terminals()
        if match is None or terminals.fullmatch("EXIST", match[1]):
            raise _NotCanonical
        column = len("create ") + 1
        tokens = [Token("WORD", match[1], line=number, column=column),
                  Token("WORD", match[2], line=number, column=column + len(match[1]) + 1)]  # fmt: skip
        column += len(match[1]) + len(match[2]) + 2
        words = match[3].split(" ")[1:]
        index = 0
        while index < len(words):
            word = words[index]
            if terminals.fullmatch("EXIST", word):
                raise _NotCanonical  # -exist after the type: not what the compiler writes
            if terminals.fullmatch("CREATE_FLAG", word):
                tokens.append(Token("CREATE_FLAG", word, line=number, column=column))
                taken = 1
            elif terminals.fullmatch("CREATE_OPTION", f"{word} x") and index + 1 < len(words):
                tokens.append(Token("CREATE_OPTION", f"{word} {words[index + 1]}", line=number, column=column))
                taken = 2
            else:
                raise _NotCanonical  # a stray word (an error) or an option without its value
            column += sum(len(w) + 1 for w in words[index : index + taken])
            index += taken
        self.owner._apply(self.owner.create(tokens), self.sets)
        self.members[match[1]] = {}
        created = self.sets[match[1]]
        self.entries.setdefault((created.type, created.family), {})

    def _add(self, line: str, number: int) -> None:
        """An ``add NAME ENTRY [nomatch]`` line, with ``IpsetTransformer._do_add``'s checks. Only a set that
        :meth:`_create` made is found, so NAME is a plain word (and not ``-exist``: ``_create`` refuses that)."""
        name, _, rest = line[4:].partition(" ")
        target = self.sets.get(name)
        if target is None:
            raise _NotCanonical
        known = self.entries[target.type, target.family]
        entries = known.get(rest)
        if entries is None:
            entries = known[rest] = self._entries(target, rest, number, len("add ") + len(name) + 2)
        members = self.members[name]
        size = len(members)
        for key, member in entries:
            members[key] = member
        if len(members) != size + len(entries) or len(members) > target.options.maxelem:
            raise _NotCanonical  # an element already in the set, or the set is full

    def _entries(self, target: _Set, rest: str, number: int, column: int) -> _Entries:
        """The members that ``ENTRY [nomatch]`` adds to a set like ``target`` (its type and family), with their
        sort keys."""
        match = _ADD_REST.fullmatch(rest)
        if match is None:
            raise _NotCanonical
        text, nomatch = match[1], match[2] is not None
        if nomatch and target.type not in NET_TYPES:
            raise _NotCanonical
        member = _plain_member(target, text, nomatch, self.networks)
        if member is not None:
            members = [member]
        else:
            token = Token("WORD", text, line=number, column=column)
            members = [SetMember(m.network, m.proto, m.port, nomatch, None) for m in self.owner._entries(target, token)]
        return tuple([(m.sort_key(), m) for m in members])


def _plain_member(target: _Set, text: str, nomatch: bool, networks: dict[str, IPNetwork]) -> SetMember | None:
    """The member of an IPv4 set that ``IpsetTransformer._entries`` builds for a plain entry (a hash:ip host, a
    hash:net network, either with ``,PROTO:PORT`` for the ``,port`` types), built the same way; None for anything
    else (the Transformer reads those). ``networks`` shares network objects between entries, by address text."""
    match = _PLAIN_ENTRY.fullmatch(text) if target.family == 4 else None
    if match is None or (target.type in PORT_TYPES) != (match[7] is not None):
        return None
    net = target.type in NET_TYPES
    if not net and match[6] is not None:
        return None  # a hash:ip CIDR: one entry per address
    network = networks.get(match[1])
    if network is None:  # as parse_network (hash:net types), or network_of(address, 32) (a host)
        value = int(match[2]) << 24 | int(match[3]) << 16 | int(match[4]) << 8 | int(match[5])
        network = networks[match[1]] = IPv4Network((value, int(match[6] or 32)), strict=False)
    port = None if match[8] is None else int(match[8])
    if port is not None and port > 0xFFFF:
        return None
    return SetMember(network, match[7], port, nomatch, None)
