"""Transformer for ``iptables_save.lark``: builds :mod:`verifier.artifacts.models` objects while parsing.

The grammar gives each rule as a flat list of option tokens (an option and its values are one token). Here they
are grouped as iptables itself groups them (reference/iptables.md §5.2, §5.4): an option belongs to the target
if the target takes it, else to the most recent ``-m`` module that takes it, else to the module ``-p tcp|udp|
sctp|icmp|ipv6-icmp`` implies (so ``-p tcp --dport 80`` and the saved ``-p tcp -m tcp --dport 80`` build the
same :class:`PortMatch`). Anything not understood -- an unknown module, target or option -- raises
:class:`ArtifactError` with file, line and column; nothing is skipped.

The Lark parser runs with this Transformer inline (no parse tree), which roughly doubles throughput.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from verifier.artifacts.iptables_options import (
    MATCH_OPTIONS,
    TARGET_OPTIONS,
    Opt,
    OptionError,
    build_match,
    build_target,
)
from verifier.artifacts.models import (
    BUILTIN_CHAINS,
    AddressMatch,
    ArtifactError,
    Chain,
    Family,
    Goto,
    InterfaceMatch,
    IptRule,
    Jump,
    Match,
    PortMatch,
    ProtocolMatch,
    Ruleset,
    Table,
    Target,
    Tproxy,
)
from verifier.artifacts.values import parse_network, parse_protocol

GRAMMAR = Path(__file__).with_name("iptables_save.lark")

OPTION_ALIASES = {
    "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--in-interface": "-i",
    "--out-interface": "-o", "--protocol": "-p", "--match": "-m", "--jump": "-j", "--goto": "-g",
    "--fragment": "-f", "--source-port": "--sport", "--destination-port": "--dport", "--source-ports": "--sports",
    "--destination-ports": "--dports", "--set": "--match-set", "--append": "-A", "--insert": "-I",
}  # fmt: skip
"""Long and old spellings -> the name iptables-save prints (reference/iptables.md §5.2)."""

SUPPORTED_TABLES = frozenset({"filter", "mangle", "raw"})
#: services.v4: kube-proxy's nat table, apart from the policy dialect's tables.
SERVICE_TABLES = frozenset({"nat"})
"""Tables of the dialect contract (DESIGN.md §4); others are reported, not read."""
EMPTY_ONLY_TABLES = frozenset({"raw"})
"""Tables accepted only without rules (other tools' save output may declare them)."""

IMPLICIT_MODULES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmp6"}
"""The match module ``-p`` loads for options given without ``-m`` (reference/iptables.md §5.2)."""

_VALUE = re.compile(r'(?:[^\s"]|"(?:[^"\\\n]|\\.)*")+')
_CHAIN_NAME_MAX = 28  # XT_EXTENSION_MAXNAMELEN - 1 (reference/iptables.md §5.1)
_IFNAME_MAX = 15  # IFNAMSIZ - 1


def unquote(word: str) -> str:
    """A word as add_param_to_argv delivers it: ``"`` toggles quoting; inside quotes ``\\`` escapes the next
    character; outside quotes a backslash is literal (reference/iptables.md §5.1)."""
    if '"' not in word:
        return word
    out: list[str] = []
    quoted = escaped = False
    for char in word:
        if quoted and escaped:
            out.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        else:
            out.append(char)
    return "".join(out)


@dataclass
class _MatchGroup:
    """Options collected for one ``-m MODULE`` (or the module ``-p`` implies)."""

    module: str
    line: int
    column: int
    implicit: bool = False
    options: dict[str, Opt] = field(default_factory=dict)


@dataclass(frozen=True)
class _ChainDecl:
    name: str
    policy: str | None
    line: int
    column: int


@dataclass(frozen=True)
class _Insert:
    rule: IptRule
    position: int


class IptablesSaveTransformer(Transformer[Token, Any]):
    """Callbacks for iptables_save.lark. One instance per family; ``begin`` sets the file being parsed."""

    def __init__(self, family: Family) -> None:
        super().__init__()
        self.family: Family = family
        self.file = "<text>"
        self.lines: list[str] = []
        self.table_lines: dict[str, int] = {}

    def begin(self, file: str, text: str, tables: frozenset[str] = SUPPORTED_TABLES) -> None:
        """Start a parse of ``text`` (named ``file`` in errors) accepting ``tables``; callbacks read the raw
        lines from here."""
        self.file = file
        self.lines = text.split("\n")
        self.table_lines = {}
        self.tables = tables

    def error(self, line: int, column: int | None, message: str) -> ArtifactError:
        return ArtifactError(self.file, line, message, column)

    # -- file structure ------------------------------------------------------------------------------------

    def start(self, children: list[Any]) -> Ruleset:
        tables = {child.name: child for child in children if isinstance(child, Table)}
        return Ruleset(self.family, tables, self.file)

    def table(self, children: list[Any]) -> Table:
        header = cast(Token, children[0])
        name = header.value[1:]
        if name not in BUILTIN_CHAINS:
            raise self.error(header.line or 0, header.column, f"unknown table *{name}")
        if name not in self.tables:
            allowed = "*nat (kube-proxy's Services)" if self.tables == SERVICE_TABLES else (
                "*filter and *mangle, and *raw only when empty")
            raise self.error(header.line or 0, header.column, f"table *{name} is not supported here (the dialect "
                             f"contract has {allowed})")  # fmt: skip
        if name in self.table_lines:
            raise self.error(header.line or 0, header.column, f"table *{name} appears twice")
        self.table_lines[name] = header.line or 0
        builtin = BUILTIN_CHAINS[name]
        policies: dict[str, str | None] = {}
        decl_lines: dict[str, int] = {}
        rules: dict[str, list[IptRule]] = {}
        for item in children[1:]:
            if isinstance(item, _ChainDecl):
                if item.name in rules and item.name in decl_lines:
                    raise self.error(item.line, item.column, f"chain {item.name} is declared twice")
                if item.policy is not None and item.name not in builtin:
                    raise self.error(item.line, item.column, f"{item.name} is not a built-in chain of table "
                                     f"{name}; only built-in chains have a policy (write '-')")  # fmt: skip
                if item.policy is not None or item.name not in policies:
                    policies[item.name] = item.policy
                decl_lines.setdefault(item.name, item.line)
                rules.setdefault(item.name, [])
                continue
            rule, position = (item.rule, item.position) if isinstance(item, _Insert) else (item, None)
            if rule.chain not in rules:
                if rule.chain not in builtin:
                    raise self.error(rule.line, 1, f"chain {rule.chain} does not exist in table {name} "
                                     f"(declare it with ':{rule.chain} - [0:0]' first)")  # fmt: skip
                rules[rule.chain] = []
                policies.setdefault(rule.chain, None)
            chain_rules = rules[rule.chain]
            if position is None:
                chain_rules.append(rule)
            elif position - 1 > len(chain_rules):
                raise self.error(rule.line, 1, f"-I {rule.chain} {position}: the chain has only "
                                 f"{len(chain_rules)} rules")  # fmt: skip
            else:
                chain_rules.insert(position - 1, rule)
        for chain_rules in rules.values():
            for rule in chain_rules:
                if name in EMPTY_ONLY_TABLES:
                    raise self.error(rule.line, 1, f"rules in table *{name} are not supported (the dialect "
                                     "contract allows the table only empty)")  # fmt: skip
                self._check_target(name, rule, rules)
        chains = {
            chain: Chain(chain, cast(Literal["ACCEPT", "DROP"] | None, policies.get(chain)), tuple(chain_rules),
                         decl_lines.get(chain, 0))
            for chain, chain_rules in rules.items()
        }  # fmt: skip
        return Table(name, chains)

    def _check_target(self, table: str, rule: IptRule, chains: dict[str, list[IptRule]]) -> None:
        target = rule.target
        column = rule.target_column or 1
        builtin = target.chain in BUILTIN_CHAINS[table] if isinstance(target, Jump | Goto) else False
        if isinstance(target, Jump | Goto) and (target.chain not in chains or builtin):
            kind = "-g" if isinstance(target, Goto) else "-j"
            what = "a built-in chain cannot be a jump target" if builtin else (
                f"not a supported target and no chain of that name in table {table}"
            )
            raise self.error(rule.line, column, f"{kind} {target.chain}: {what}")
        wrong_builtin = rule.chain in BUILTIN_CHAINS[table] and rule.chain != "PREROUTING"
        if isinstance(target, Tproxy) and (table != "mangle" or wrong_builtin):
            raise self.error(rule.line, column, "TPROXY is only valid in mangle PREROUTING (or chains reached from "
                             f"it), not {table} {rule.chain}")  # fmt: skip

    def chain_decl(self, children: list[Any]) -> _ChainDecl:
        name_token, policy_token, counters = children
        name = name_token.value[1:]
        self._check_chain_name(name, name_token)
        policy = policy_token.value
        if policy not in ("ACCEPT", "DROP", "-"):
            raise self.error(policy_token.line, policy_token.column, f"chain policy must be ACCEPT, DROP or '-', "
                             f"not {policy!r}")  # fmt: skip
        if counters is not None and counters.value != "-" and not re.fullmatch(r"\[\d+:\d+\]", counters.value):
            raise self.error(counters.line, counters.column, f"bad counters {counters.value!r} (want [packets:bytes])")
        return _ChainDecl(name, None if policy == "-" else policy, name_token.line, name_token.column)

    def new_chain(self, children: list[Any]) -> _ChainDecl:
        (name_token,) = children
        self._check_chain_name(name_token.value, name_token)
        return _ChainDecl(name_token.value, None, name_token.line, name_token.column)

    def set_policy(self, children: list[Any]) -> _ChainDecl:
        chain, policy, _counters = children
        if policy.value not in ("ACCEPT", "DROP"):
            raise self.error(policy.line, policy.column, f"-P policy must be ACCEPT or DROP, not {policy.value!r}")
        return _ChainDecl(chain.value, policy.value, chain.line, chain.column)

    def unsupported(self, children: list[Any]) -> None:
        command = children[0]
        message = (f"{command.value}: only -A, -I, -N, -P and ':CHAIN' lines are read; a ruleset file that "
                   "deletes or replaces rules cannot be checked statically")  # fmt: skip
        raise self.error(command.line, command.column, message)

    def _check_chain_name(self, name: str, token: Token) -> None:
        if len(name) > _CHAIN_NAME_MAX:
            raise self.error(token.line or 0, token.column, f"chain name {name!r} is longer than {_CHAIN_NAME_MAX}")
        if not name or name[0] in "-!":
            raise self.error(token.line or 0, token.column, f"bad chain name {name!r}")

    # -- rules -----------------------------------------------------------------------------------------------

    def append(self, children: list[Any]) -> IptRule:
        command = children[1]
        return self._rule(command, children[2:])

    def insert(self, children: list[Any]) -> _Insert:
        command, position = children[1], children[2]
        return _Insert(self._rule(command, children[3:]), int(position.value) if position is not None else 1)

    def _rule(self, command: Token, tokens: Sequence[Token]) -> IptRule:
        line = command.line or 0
        chain = command.value.split(None, 1)[1]
        if len(chain) > _CHAIN_NAME_MAX:
            raise self.error(line, command.column, f"chain name {chain!r} is longer than {_CHAIN_NAME_MAX}")
        builder = _RuleBuilder(self, line)
        negated = False
        for token in tokens:
            kind = token.type
            if kind == "BANG":
                negated = True
                continue
            if kind == "WORD":
                raise self.error(line, token.column, _stray_message(token.value))
            text = token.value
            if kind == "FLAG":
                builder.add(Opt(OPTION_ALIASES.get(text, text), negated, (), line, token.column or 0))
            else:
                name, rest = text.split(None, 1)
                raw_values = (rest,) if kind == "OPTION" else tuple(_VALUE.findall(rest))
                values = tuple(unquote(v) for v in raw_values)
                if raw_values[0] == "!":  # a quoted "!" is a value (a comment may be "!")
                    raise self.error(line, token.column, f"'{name} ! VALUE' (negation after the option) is not "
                                     f"accepted; write '! {name} VALUE'")  # fmt: skip
                builder.add(Opt(OPTION_ALIASES.get(name, name), negated, values, line, token.column or 0))
            negated = False
        if negated:
            raise self.error(line, None, "'!' at the end of the rule negates nothing")
        raw = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return builder.build(chain, raw)


def _stray_message(word: str) -> str:
    name = OPTION_ALIASES.get(word, word)
    takes_value = any(name in opts for opts in MATCH_OPTIONS.values()) or any(
        name in opts for opts in TARGET_OPTIONS.values()
    ) or name in ("-s", "-d", "-i", "-o", "-p", "-m", "-j", "-g")
    if takes_value:
        return f"option {word} needs a value"
    if word.startswith("-"):
        return f"unknown option {word!r} (not supported by this reader)"
    return f"unexpected word {word!r} (a value without its option?)"


class _RuleBuilder:
    """Collects one rule's options in order and turns them into an :class:`IptRule`."""

    def __init__(self, owner: IptablesSaveTransformer, line: int) -> None:
        self.owner = owner
        self.line = line
        self.header: dict[str, Opt] = {}
        self.groups: list[_MatchGroup] = []
        self.target: Opt | None = None
        self.target_options: dict[str, Opt] = {}

    def fail(self, opt: Opt, message: str) -> ArtifactError:
        return self.owner.error(opt.line, opt.column, message)

    def add(self, opt: Opt) -> None:
        name = opt.name
        if name in ("-s", "-d", "-i", "-o", "-p", "-f"):
            if name == "-f":
                raise self.fail(opt, "fragment matching (-f) is not supported")
            if name in self.header:
                raise self.fail(opt, f"multiple {name} options in one rule")
            self.header[name] = opt
        elif name == "-m":
            self._add_module(opt)
        elif name in ("-j", "-g"):
            if opt.negated:
                raise self.fail(opt, f"{name} cannot be negated")
            if self.target is not None:
                raise self.fail(opt, "a rule has at most one -j/-g target")
            self.target = opt
        else:
            self._add_option(opt)

    def _add_module(self, opt: Opt) -> None:
        module = opt.values[0]
        if opt.negated:
            raise self.fail(opt, "-m cannot be negated")
        wrong_family = {"icmp": 6, "icmp6": 4}.get(module) == self.owner.family
        if module not in MATCH_OPTIONS or wrong_family:
            raise self.fail(opt, f"unknown match module {module!r} for IPv{self.owner.family} "
                            f"(supported: {', '.join(sorted(MATCH_OPTIONS))})")  # fmt: skip
        self.groups.append(_MatchGroup(module, opt.line, opt.column))

    def _add_option(self, opt: Opt) -> None:
        name = opt.name
        target = self.target.values[0] if self.target is not None and self.target.name == "-j" else None
        if target is not None and target in TARGET_OPTIONS and name in TARGET_OPTIONS[target]:
            if name in self.target_options:
                raise self.fail(opt, f"multiple {name} options for target {target}")
            self.target_options[name] = opt
            return
        for group in reversed(self.groups):
            if name in MATCH_OPTIONS[group.module] and name not in group.options:
                group.options[name] = opt
                return
        protocol = self.header.get("-p")
        implicit = None
        if protocol is not None and not protocol.negated:
            implicit = IMPLICIT_MODULES.get(self._protocol_number(protocol))
        if implicit and name in MATCH_OPTIONS[implicit] and not any(g.implicit for g in self.groups):
            group = _MatchGroup(implicit, opt.line, opt.column, implicit=True)
            group.options[name] = opt
            self.groups.append(group)
            return
        owners = [m for m, names in MATCH_OPTIONS.items() if name in names]
        if any(name in g.options for g in self.groups):
            raise self.fail(opt, f"multiple {name} options in one rule")
        if owners:
            raise self.fail(opt, f"option {name} needs -m {' or -m '.join(owners)} before it")
        if target is None:
            raise self.fail(opt, f"option {name} belongs to no match module or target of this rule")
        raise self.fail(opt, f"option {name} does not belong to target {target}")

    def _protocol_number(self, opt: Opt) -> int:
        try:
            return parse_protocol(opt.values[0])
        except ValueError as e:
            raise self.fail(opt, str(e)) from None

    def _value(self, opt: Opt, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(opt.values[0])
        except ValueError as e:
            raise self.fail(opt, str(e)) from None

    def build(self, chain: str, raw: str) -> IptRule:
        family = self.owner.family
        header = self.header
        protocol = None
        if "-p" in header:
            opt = header["-p"]
            number = self._protocol_number(opt)
            if number == 0 and opt.negated:
                raise self.fail(opt, "'! -p all' matches nothing")
            protocol = ProtocolMatch(number, opt.negated) if number else None
        source = self._address(header.get("-s"))
        destination = self._address(header.get("-d"))
        in_interface = self._interface(header.get("-i"))
        out_interface = self._interface(header.get("-o"))
        matches: list[Match] = []
        for group in self.groups:
            try:
                match = build_match(group.module, group.options, protocol, family)
            except OptionError as e:
                raise self.owner.error(e.opt.line if e.opt else group.line, e.opt.column if e.opt else group.column,
                                       e.message) from None  # fmt: skip
            _merge_into(matches, match)
        target: Target | None = None
        if self.target is not None:
            name = self.target.values[0]
            if self.target.name == "-g":
                target = Goto(name)
            elif name in TARGET_OPTIONS:
                try:
                    target = build_target(name, self.target_options, protocol, family)
                except OptionError as e:
                    opt = e.opt or self.target
                    raise self.owner.error(opt.line, opt.column, e.message) from None
            else:
                target = Jump(name)
        target_column = self.target.column if self.target is not None else 0
        return IptRule(chain, protocol, source, destination, in_interface, out_interface, tuple(matches), target,
                       self.line, raw, target_column)  # fmt: skip

    def _address(self, opt: Opt | None) -> AddressMatch | None:
        if opt is None:
            return None
        network = self._value(opt, lambda text: parse_network(text, self.owner.family))
        if network.prefixlen == 0 and not opt.negated:
            return None  # 0.0.0.0/0 matches everything; iptables-save omits it
        return AddressMatch(network, opt.negated)

    def _interface(self, opt: Opt | None) -> InterfaceMatch | None:
        if opt is None:
            return None
        name = opt.values[0]
        if len(name) > _IFNAME_MAX or not name:
            raise self.fail(opt, f"interface name {name!r} is longer than {_IFNAME_MAX} characters")
        if name == "+" and not opt.negated:
            return None  # any interface; iptables-save omits it
        return InterfaceMatch(name, opt.negated)


def _merge_into(matches: list[Match], match: Match) -> None:
    """Append ``match``, folding a tcp/udp/sctp match into an earlier one of the same protocol when they set
    different options -- the nf_tables backend prints such a pair back as one match."""
    if isinstance(match, PortMatch):
        for index, earlier in enumerate(matches):
            if isinstance(earlier, PortMatch) and earlier.protocol == match.protocol:
                clash = (earlier.sport and match.sport) or (earlier.dport and match.dport)
                if not clash:
                    matches[index] = PortMatch(
                        earlier.protocol,
                        earlier.sport or match.sport,
                        earlier.sport_negated or match.sport_negated,
                        earlier.dport or match.dport,
                        earlier.dport_negated or match.dport_negated,
                    )
                    return
    matches.append(match)


# ---------------------------------------------------------------------------------------------------------------
# Parser and error messages

_PARSE_ERRORS: dict[str, list[str]] = {
    "a rule or chain line outside a table: start the table with a '*filter' (or *nat, *mangle, *raw) line": [
        "-A INPUT -j ACCEPT\n", ":INPUT ACCEPT [0:0]\n", "-N X\n", "-P INPUT DROP\n",
    ],
    "'COMMIT' without an open table": ["COMMIT\n", "*filter\nCOMMIT\nCOMMIT\n"],
    "table not closed: 'COMMIT' is missing before the end of the file": [
        "*filter\n", "*filter\n:INPUT ACCEPT [0:0]\n", "*filter\n-A INPUT -j ACCEPT\n", "*filter\n-A INPUT",
        "*filter\n:X - [0:0]\n-A X -j ACCEPT\n", "*filter\n:X - [0:0]\n:Y - [0:0]\n-A X -j ACCEPT\n-A X\n",
    ],
    "a new table starts before 'COMMIT' closed the previous one": ["*filter\n*nat\n", "*filter\n-N X\n*nat\n"],
    "chain declaration needs a policy: ':NAME POLICY [packets:bytes]' ('-' for a user chain)": ["*filter\n:X\n"],
    "unknown command {token!r} (expected -A CHAIN, -I CHAIN, -N CHAIN, -P CHAIN POLICY, :CHAIN or COMMIT)": [
        "*filter\nfoo\n", "*filter\n-A\n", "*filter\n-Q X\n", "*filter\n-A INPUT -j ACCEPT\nbar\n",
        "*filter\n:X - [0:0]\nfoo\n", "*filter\n:X - [0:0]\n:Y - [0:0]\nfoo\n",
        "*filter\n:X - [0:0]\n-A X -j ACCEPT\n-A X -j ACCEPT\nfoo\n",
    ],
    "'!' must be followed by the option it negates": ["*filter\n-A X !\n", "*filter\n-A X ! !\n"],
    "text after COMMIT on the same line": ["*filter\nCOMMIT x\n"],
}  # fmt: skip

_parsers: dict[int, tuple[Lark, IptablesSaveTransformer]] = {}
_lock = threading.Lock()


def _parser(family: Family) -> tuple[Lark, IptablesSaveTransformer]:
    if family not in _parsers:
        transformer = IptablesSaveTransformer(family)
        lark = Lark.open(str(GRAMMAR), parser="lalr", lexer="contextual", transformer=transformer)
        _parsers[family] = (lark, transformer)
    return _parsers[family]


def parse_iptables(text: str, family: Family = 4, file: str = "<text>",
                   tables: frozenset[str] = SUPPORTED_TABLES) -> Ruleset:
    """Parse iptables-restore input or iptables-save output (ip6tables for ``family=6``) into a :class:`Ruleset`.

    Raises :class:`ArtifactError` (file:line:column and a human message) for syntax errors and for anything not
    understood.
    """
    with _lock:
        lark, transformer = _parser(family)
        transformer.begin(file, text, tables)
        try:
            return cast(Ruleset, lark.parse(text))
        except UnexpectedInput as e:
            raise ArtifactError(file, e.line, _describe(e, lark, text), e.column) from None


def _describe(error: UnexpectedInput, lark: Lark, text: str) -> str:
    """A human message for a Lark error: a labelled example when one matches, else a generic description."""
    if isinstance(error, UnexpectedCharacters):
        line = text.split("\n")[error.line - 1] if error.line > 0 else ""
        if error.char == '"':
            return "unterminated quoted string (a '\"' without its closing '\"')"
        return f"unexpected character {error.char!r} in {line.strip()!r}"
    token = error.token.value if isinstance(error, UnexpectedToken) else ""
    try:
        label = error.match_examples(lark.parse, _PARSE_ERRORS, use_accepts=True)
    except ArtifactError:
        label = None
    if label:
        return label.format(token=token)
    if isinstance(error, UnexpectedToken):
        where = "end of file" if error.token.type == "$END" else repr(token.strip() or "end of line")
        return f"unexpected {where}"
    return str(error).splitlines()[0]
