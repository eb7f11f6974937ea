"""Transformer for ``ipset.lark``: replays an ``ipset restore`` stream (or ``ipset save`` output) into sets.

Each command line becomes one small command object; :func:`parse_ipsets` then applies them in order, as
``ipset restore`` does (create, add, del, flush, destroy, swap, rename), and returns the sets left at the end.
Entries are normalised the way the kernel stores them (reference/iptables.md §5.5): a host is a /32 (/128),
host bits of a network are cleared, ``6:80`` and ``80`` are ``tcp:80``, ``icmp:echo-request`` is type 8 code 0,
a hash:ip CIDR and a port range ``80-82`` expand into one entry per address/port. So a set read from our restore
file equals the same set read back from ``ipset save`` of a kernel it was loaded into.

Anything outside the dialect contract (other set types, timeouts, skb extensions, address ranges) raises
:class:`ArtifactError` with file:line:column; nothing is skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from verifier.artifacts.ipsets import (
    DEFAULT_MAXELEM,
    ICMP_CODES,
    ICMPV6_CODES,
    NET_TYPES,
    PORT_TYPES,
    PORTLESS_PROTOCOLS,
    SET_NAME_MAX,
    SET_PROTOCOLS,
    SET_TYPES,
    IpSet,
    SetMember,
    SetOptions,
    SetType,
    network_of,
)
from verifier.artifacts.models import ArtifactError, Family
from verifier.artifacts.values import parse_c_uint, parse_network, parse_port

GRAMMAR = Path(__file__).with_name("ipset.lark")

EXPAND_MAX = 65536
"""Most entries one ``add`` may expand into (a hash:ip CIDR or a port range), DEFAULT_MAXELEM as ipset."""

_PROTOCOL_NAMES = {number: name for name, number in SET_PROTOCOLS.items()}


def unquote(word: str) -> str:
    """ipset's build_argv: a ``"`` toggles quoting and is dropped; there are no escapes."""
    return word.replace('"', "")


@dataclass
class _Set:
    """A set while the stream is replayed: members keyed like the kernel's hash (later adds are refused)."""

    name: str
    type: SetType
    family: Family
    options: SetOptions
    line: int
    members: dict[tuple[Any, ...], SetMember] = field(default_factory=dict)

    def freeze(self) -> IpSet:
        members = tuple(sorted(self.members.values(), key=SetMember.sort_key))
        return IpSet(self.name, self.type, self.family, members, self.options, self.line)


@dataclass(frozen=True)
class _Command:
    """One parsed line; ``apply`` changes the replay state (``sets``) or raises with this line's position."""

    verb: str
    line: int
    column: int
    exist: bool
    words: tuple[Token, ...]
    options: tuple[Token, ...]


class IpsetTransformer(Transformer[Token, Any]):
    """Callbacks for ipset.lark: each command becomes a :class:`_Command`; ``start`` replays them."""

    def __init__(self) -> None:
        super().__init__()
        self.file = "<text>"

    def error(self, line: int, column: int | None, message: str) -> ArtifactError:
        return ArtifactError(self.file, line, message, column)

    def token_error(self, token: Token, message: str) -> ArtifactError:
        return self.error(token.line or 0, token.column, message)

    def start(self, children: list[Any]) -> dict[str, IpSet]:
        sets: dict[str, _Set] = {}
        for command in children:
            if isinstance(command, _Command):
                self._apply(command, sets)
        return {name: sets[name].freeze() for name in sorted(sets)}

    def _make_command(self, verb: str, children: list[Any]) -> _Command:
        tokens = [c for c in children if isinstance(c, Token)]
        exist = any(t.type == "EXIST" for t in tokens)
        words = tuple(t for t in tokens if t.type == "WORD")
        options = tuple(t for t in tokens if t.type not in ("WORD", "EXIST"))
        first = tokens[0] if tokens else None
        line = first.line if first is not None and first.line else 0
        column = first.column if first is not None and first.column else 1
        return _Command(verb, line, column, exist, words, options)

    def create(self, children: list[Any]) -> _Command:
        return self._make_command("create", children)

    def add(self, children: list[Any]) -> _Command:
        return self._make_command("add", children)

    def delete(self, children: list[Any]) -> _Command:
        return self._make_command("del", children)

    def flush(self, children: list[Any]) -> _Command:
        return self._make_command("flush", children)

    def destroy(self, children: list[Any]) -> _Command:
        return self._make_command("destroy", children)

    def swap(self, children: list[Any]) -> _Command:
        return self._make_command("swap", children)

    def rename(self, children: list[Any]) -> _Command:
        return self._make_command("rename", children)

    def commit(self, children: list[Any]) -> None:
        return None

    # -- replay --------------------------------------------------------------------------------------------

    def _apply(self, command: _Command, sets: dict[str, _Set]) -> None:
        handler: Callable[[_Command, dict[str, _Set]], None] = getattr(self, f"_do_{command.verb}")
        handler(command, sets)

    def _existing(self, token: Token, sets: dict[str, _Set]) -> _Set:
        name = unquote(token.value)
        if name not in sets:
            raise self.token_error(token, f"set {name!r} does not exist (no 'create {name} …' before this line)")
        return sets[name]

    def _do_create(self, command: _Command, sets: dict[str, _Set]) -> None:
        name_token, type_token = command.words[0], command.words[1]
        name = unquote(name_token.value)
        if len(name) > SET_NAME_MAX:
            raise self.token_error(name_token, f"set name {name!r} is longer than {SET_NAME_MAX} characters")
        set_type = type_token.value
        if set_type not in SET_TYPES:
            raise self.token_error(type_token, f"set type {set_type!r} is not supported "
                                   f"(supported: {', '.join(SET_TYPES)})")  # fmt: skip
        for stray in command.words[2:]:
            raise self.token_error(stray, f"unknown create option {stray.value!r}")
        family: Family = 4
        options: dict[str, Any] = {}
        for token in command.options:
            option, _, raw = token.value.partition(" ")
            value = unquote(raw.strip())
            if option == "family":
                if value not in ("inet", "inet6"):
                    raise self.token_error(token, f"family must be inet or inet6, not {value!r}")
                family = 4 if value == "inet" else 6
            elif option in ("hashsize", "maxelem", "bucketsize", "initval", "revision"):
                options[option] = self._number(token, value, option)
            elif option in ("comment", "counters"):
                options[option] = True
            else:
                raise self.token_error(token, f"create option {option!r} is not supported (the dialect contract "
                                       "has no timeouts or skb extensions)")  # fmt: skip
        created = _Set(name, cast(SetType, set_type), family, SetOptions(**options), command.line)
        if name in sets:
            old = sets[name]
            same = (old.type, old.family, old.options) == (created.type, created.family, created.options)
            if command.exist and same:
                return
            raise self.token_error(name_token, f"set {name!r} already exists" + ("" if command.exist else
                                   " (use -exist to keep it)") + ("" if same else " with different settings"))
        sets[name] = created

    def _do_add(self, command: _Command, sets: dict[str, _Set]) -> None:
        target = self._existing(command.words[0], sets)
        entry_token = command.words[1]
        for stray in command.words[2:]:
            raise self.token_error(stray, f"unknown add option {stray.value!r}")
        nomatch = False
        comment: str | None = None
        for token in command.options:
            option, _, raw = token.value.partition(" ")
            if option == "nomatch":
                if target.type not in NET_TYPES:
                    raise self.token_error(token, f"nomatch is only valid for {' and '.join(sorted(NET_TYPES))} "
                                           f"sets, not {target.type}")  # fmt: skip
                nomatch = True
            elif option == "comment":
                if not target.options.comment:
                    raise self.token_error(token, f"set {target.name!r} was created without comment support")
                comment = unquote(raw.strip())
            elif option in ("packets", "bytes"):
                if not target.options.counters:
                    raise self.token_error(token, f"set {target.name!r} was created without counters")
                self._number(token, unquote(raw.strip()), option)  # statistics only: checked, not kept
            else:
                raise self.token_error(token, f"add option {option!r} is not supported (the dialect contract has "
                                       "no timeouts or skb extensions)")  # fmt: skip
        for member in self._entries(target, entry_token):
            member = replace(member, nomatch=nomatch, comment=comment)
            if member.key in target.members and not command.exist:
                raise self.token_error(entry_token, f"element {member.value} is already in set {target.name!r}")
            target.members[member.key] = member
        if len(target.members) > target.options.maxelem:
            raise self.token_error(entry_token, f"set {target.name!r} is full (maxelem {target.options.maxelem})")

    def _do_del(self, command: _Command, sets: dict[str, _Set]) -> None:
        target = self._existing(command.words[0], sets)
        entry_token = command.words[1]
        for stray in command.words[2:]:
            raise self.token_error(stray, f"unknown del option {stray.value!r}")
        for member in self._entries(target, entry_token):
            if member.key not in target.members and not command.exist:
                raise self.token_error(entry_token, f"element {member.value} is not in set {target.name!r}")
            target.members.pop(member.key, None)

    def _do_flush(self, command: _Command, sets: dict[str, _Set]) -> None:
        chosen = [self._existing(command.words[0], sets)] if command.words else list(sets.values())
        for chosen_set in chosen:
            chosen_set.members.clear()

    def _do_destroy(self, command: _Command, sets: dict[str, _Set]) -> None:
        if not command.words:
            sets.clear()
            return
        del sets[self._existing(command.words[0], sets).name]

    def _do_swap(self, command: _Command, sets: dict[str, _Set]) -> None:
        first, second = (self._existing(token, sets) for token in command.words)
        if (first.type, first.family) != (second.type, second.family):
            raise self.token_error(command.words[1], f"cannot swap {first.name!r} ({first.type}) and "
                                   f"{second.name!r} ({second.type}): types differ")  # fmt: skip
        sets[first.name] = replace(second, name=first.name)
        sets[second.name] = replace(first, name=second.name)

    def _do_rename(self, command: _Command, sets: dict[str, _Set]) -> None:
        old = self._existing(command.words[0], sets)
        new_token = command.words[1]
        new = unquote(new_token.value)
        if new in sets:
            raise self.token_error(new_token, f"cannot rename to {new!r}: a set of that name exists")
        if len(new) > SET_NAME_MAX:
            raise self.token_error(new_token, f"set name {new!r} is longer than {SET_NAME_MAX} characters")
        del sets[old.name]
        sets[new] = replace(old, name=new)

    # -- entries ---------------------------------------------------------------------------------------------

    def _number(self, token: Token, text: str, what: str) -> int:
        try:
            return parse_c_uint(text, what=what)
        except ValueError as e:
            raise self.token_error(token, str(e)) from None

    def _entries(self, target: _Set, token: Token) -> list[SetMember]:
        """The kernel entries one ``add``/``del`` word stands for (several for a hash:ip CIDR or a port range)."""
        text = unquote(token.value)
        address_text, comma, port_text = text.partition(",")
        if (target.type in PORT_TYPES) != bool(comma):
            want = "ADDRESS,[PROTO:]PORT" if target.type in PORT_TYPES else "one address or network"
            raise self.token_error(token, f"entry {text!r} does not fit set {target.name!r} ({target.type}): "
                                   f"want {want}")  # fmt: skip
        if "-" in address_text:
            raise self.token_error(token, f"address range {address_text!r} is not supported; write networks")
        try:
            network = parse_network(address_text, target.family)
        except ValueError as e:
            raise self.token_error(token, str(e)) from None
        if target.type in NET_TYPES:
            if network.prefixlen == 0:
                raise self.token_error(token, "hash:net cannot hold a /0 network (split it into two /1)")
            networks = [network]
        else:
            if network.num_addresses > EXPAND_MAX:
                raise self.token_error(token, f"{address_text} expands into more than {EXPAND_MAX} entries")
            bits = network.max_prefixlen
            networks = [network_of(address, bits) for address in (network if network.num_addresses > 1 else
                                                                  [network.network_address])]  # fmt: skip
        if not comma:
            return [SetMember(net) for net in networks]
        ports = self._ports(target, token, port_text)
        return [SetMember(net, proto, port) for net in networks for proto, port in ports]

    def _ports(self, target: _Set, token: Token, text: str) -> list[tuple[str, int]]:
        """``[PROTO:]PORT[-PORT]`` as (protocol name, port) pairs; icmp types are ``type << 8 | code``."""
        proto_text, colon, port_text = text.rpartition(":") if ":" in text else ("tcp", "", text)
        del colon
        proto = proto_text.lower()
        if proto.isdigit():
            proto = _PROTOCOL_NAMES.get(int(proto), proto)
        if proto not in SET_PROTOCOLS:
            raise self.token_error(token, f"protocol {proto_text!r} is not supported in set entries "
                                   f"(supported: {', '.join(SET_PROTOCOLS)})")  # fmt: skip
        if proto in PORTLESS_PROTOCOLS:
            if (proto == "icmp") != (target.family == 4):
                raise self.token_error(token, f"{proto} entries do not fit an IPv{target.family} set")
            return [(proto, self._icmp(token, proto, port_text))]
        first_text, dash, last_text = port_text.partition("-")
        try:
            first = parse_port(first_text)
            last = parse_port(last_text) if dash else first
        except ValueError as e:
            raise self.token_error(token, str(e)) from None
        if last < first:
            raise self.token_error(token, f"port range {port_text!r} is empty (start after end)")
        return [(proto, port) for port in range(first, last + 1)]

    def _icmp(self, token: Token, proto: str, text: str) -> int:
        names = ICMP_CODES if proto == "icmp" else ICMPV6_CODES
        if text in names:
            icmp_type, code = names[text]
            return icmp_type << 8 | code
        type_text, slash, code_text = text.partition("/")
        if not (type_text.isdigit() and slash and code_text.isdigit()) or int(type_text) > 255 or int(code_text) > 255:
            raise self.token_error(token, f"{proto} entry {text!r}: want a type name or TYPE/CODE (0-255 each)")
        return int(type_text) << 8 | int(code_text)


_PARSE_ERRORS: dict[str, list[str]] = {
    "unknown ipset command {token!r} (expected create, add, del, flush, destroy, swap, rename or COMMIT)": [
        "foo\n", "create s hash:ip\nbar\n", "list\n",
    ],
    "create needs a set name and a type: 'create NAME TYPE [options]'": [
        "create\n", "create s\n", "n s\n", "create s hash:ip\ncreate\n", "create s hash:ip\ncreate t\n",
        "create s hash:ip\nadd s 1.2.3.4\ncreate t\n",
    ],
    "add/del need a set name and an entry: 'add NAME ENTRY [options]'": [
        "add\n", "add s\n", "del s\n", "create s hash:ip\nadd s\n", "create s hash:ip\ndel s\n",
        "create s hash:ip\nadd s 1.2.3.4\nadd s\n",
    ],
    "swap/rename need two set names": ["swap a\n", "rename a\n", "create s hash:ip\nswap a\n"],
}  # fmt: skip

_parser: tuple[Lark, IpsetTransformer] | None = None
_lock = threading.Lock()


def _get_parser() -> tuple[Lark, IpsetTransformer]:
    global _parser
    if _parser is None:
        transformer = IpsetTransformer()
        _parser = (Lark.open(str(GRAMMAR), parser="lalr", lexer="contextual", transformer=transformer), transformer)
    return _parser


def parse_ipsets(text: str, file: str = "<text>") -> dict[str, IpSet]:
    """Replay an ``ipset restore`` stream / ``ipset save`` output; the sets it leaves, by name (sorted).

    Raises :class:`ArtifactError` (file:line:column and a human message) for syntax errors and for anything
    outside the dialect contract.
    """
    with _lock:
        lark, transformer = _get_parser()
        transformer.file = file
        try:
            return cast(dict[str, IpSet], lark.parse(text))
        except UnexpectedInput as e:
            raise ArtifactError(file, e.line, _describe(e, lark), e.column) from None


def _describe(error: UnexpectedInput, lark: Lark) -> str:
    if isinstance(error, UnexpectedCharacters):
        if error.char == '"':
            return "unterminated quoted string (a '\"' without its closing '\"')"
        return f"unexpected character {error.char!r}"
    token = error.token.value if isinstance(error, UnexpectedToken) else ""
    try:
        label = error.match_examples(lark.parse, _PARSE_ERRORS, use_accepts=True)
    except ArtifactError:
        label = None
    if label:
        return label.format(token=token.strip())
    if isinstance(error, UnexpectedToken):
        return "unexpected end of file" if error.token.type == "$END" else f"unexpected {token.strip()!r}"
    return str(error).splitlines()[0]


__all__ = ["DEFAULT_MAXELEM", "IpsetTransformer", "parse_ipsets", "unquote"]
