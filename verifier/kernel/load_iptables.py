"""Load the iptables target's files into a testbed's node namespace, with what TPROXY needs.

:func:`load_iptables` applies ``ipsets.v4``/``rules.v4`` (and ``.v6``) exactly as a node would,
with the real ``ipset restore`` and ``iptables-restore``/``ip6tables-restore`` — so a file the kernel
would refuse fails here too. Reloading (another policy set on the same testbed) first empties our
tables, then destroys every set: ipsets live per network namespace (since Linux 3.x; checked on this
machine: a set created in one netns is invisible in another and vanishes with it), so only the
testbed node's sets are touched.

For L7 redirects it also sets up, once per testbed: the policy route for TPROXY'd packets
(``ip rule fwmark PROXY/PROXY lookup 2024`` + ``local 0.0.0.0/0 dev lo table 2024``, and the IPv6
pair), as Cilium does for its proxy mark (reference/iptables.md §6.2, kernel tproxy.rst); and
:mod:`verifier.kernel.tproxy_listener` on every proxy port, standing in for the proxies and logging
what it receives (:meth:`IptablesLoad.redirected`).
"""

from __future__ import annotations

import select
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.targets.iptables import marks
from compiler.targets.proxyports import LISTENERS, PROXY_PORT_MIN
from verifier.kernel import netns as ns
from verifier.kernel.testbed import Testbed, helper_argv

HERE = Path(__file__).resolve().parent
TPROXY_LISTENER = HERE / "tproxy_listener.py"
PROXY_PORTS = tuple(range(PROXY_PORT_MIN, PROXY_PORT_MIN + len(LISTENERS)))
#: Restore input that empties every chain the target writes to (releasing our sets).
RESET = (
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    "*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
)


@dataclass(frozen=True)
class Redirect:
    """One flow the stand-in proxy received: proxy port, protocol, client and original destination."""

    protocol: str
    proxy_port: int
    src: str
    dst: str
    dport: int


class IptablesLoad:
    """What was loaded into one testbed, and the stand-in proxy's log."""

    def __init__(self, testbed: Testbed, log: Path) -> None:
        self.testbed = testbed
        self.log = log
        self._mark = 0

    def clear_log(self) -> None:
        """Forget deliveries so far (the next :meth:`redirected` only shows later ones)."""
        self._mark = self.log.stat().st_size if self.log.exists() else 0

    def redirected(self) -> list[Redirect]:
        """Every delivery the stand-in proxy logged since the last :meth:`clear_log`."""
        if not self.log.exists():
            return []
        with self.log.open(encoding="utf-8") as f:
            f.seek(self._mark)
            rows = [line.split() for line in f.read().splitlines()]
        return [Redirect(r[0], int(r[1]), r[2], r[3], int(r[4])) for r in rows if len(r) == 5 and r[0] != "error"]


def _files(artifacts: Path | Mapping[str, str]) -> dict[str, str]:
    if isinstance(artifacts, Path):
        base = artifacts / "iptables" if (artifacts / "iptables").is_dir() else artifacts
        return {p.name: p.read_text() for p in sorted(base.iterdir()) if p.is_file()}
    return dict(artifacts)


#: Flush the node's conntrack table over ctnetlink (no ``conntrack`` tool needed): one
#: IPCTNL_MSG_CT_DELETE (NFNL_SUBSYS_CTNETLINK << 8 | 2) per family without attributes deletes every
#: entry (linux/netfilter/nfnetlink_conntrack.h); the ACK's error field must be 0.
FLUSH_CONNTRACK = """
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
for family in (socket.AF_INET, socket.AF_INET6):
    s.send(struct.pack("=LHHLL", 20, (1 << 8) | 2, 1 | 4, family, 0) + struct.pack("=BBH", family, 0, 0))
    error = struct.unpack("=i", s.recv(4096)[16:20])[0]
    if error not in (0, -2):
        sys.exit(f"conntrack flush (family {family}) failed: errno {-error}")
"""


def reset(testbed: Testbed) -> None:
    """Empty our tables (v4 and v6), destroy every ipset of the node namespace, flush its conntrack.

    Conntrack must go too: an entry left by the previous policy set (a UDP exchange is
    ESTABLISHED for 30 s and more) would let its flow through the ``ESTABLISHED`` accept rule.
    """
    for tool in ("iptables-restore", "ip6tables-restore"):
        testbed.node_exec([tool], input=RESET)
    testbed.node_exec(["ipset", "destroy"])
    testbed.node_exec([sys.executable, "-I", "-S", "-c", FLUSH_CONNTRACK])


def load_iptables(testbed: Testbed, artifacts: Path | Mapping[str, str]) -> IptablesLoad:
    """Load ``OUT/`` (or ``OUT/iptables/``, or the ``emit()`` dict) into ``testbed.node_netns``.

    Order: reset, ``ipset restore`` (sets must exist before rules name them), then
    ``iptables-restore`` per family; then the TPROXY routing and stand-in proxy, once per testbed.
    """
    files = _files(artifacts)
    if "rules.v4" not in files or "ipsets.v4" not in files:
        raise ValueError(f"no rules.v4/ipsets.v4 in {artifacts}")
    reset(testbed)
    for version in (4, 6):
        sets = files.get(f"ipsets.v{version}")
        if sets is not None:
            testbed.node_exec(["ipset", "restore"], input=sets)
    for version, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        rules = files.get(f"rules.v{version}")
        if rules is not None:
            testbed.node_exec([tool], input=rules)
    return _proxy(testbed)


_LOADS: dict[str, IptablesLoad] = {}


def _proxy(testbed: Testbed) -> IptablesLoad:
    """Policy routing and the stand-in proxy, set up the first time a testbed gets rules."""
    key = f"{testbed.node_netns}#tproxy"
    if key in testbed.listeners and testbed.listeners[key].poll() is None and key in _LOADS:
        load = _LOADS[key]
        load.clear_log()
        return load
    mark = marks.bits_mask(marks.PROXY)
    for family in ("-4", "-6"):
        whole = "0.0.0.0/0" if family == "-4" else "::/0"
        rules = testbed.node_exec(["ip", family, "rule", "show", "pref", str(marks.PROXY_RULE_PRIORITY)]).stdout
        if "lookup" not in rules:
            testbed.node_exec(["ip", family, "rule", "add", "pref", str(marks.PROXY_RULE_PRIORITY), "fwmark", mark,
                               "lookup", str(marks.PROXY_TABLE)])
        testbed.node_exec(["ip", family, "route", "replace", "local", whole, "dev", "lo",
                           "table", str(marks.PROXY_TABLE)])
    log = Path(tempfile.mkdtemp(prefix=f"netpolc-tproxy-{testbed.run_id}-")) / "deliveries.log"
    log.touch()
    argv = helper_argv(testbed.node_netns, TPROXY_LISTENER,
                       [*(f"--port={p}" for p in PROXY_PORTS), f"--log={log}"])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    testbed.listeners[key] = proc  # the testbed's cleanup stops it with its own listeners
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15.0)
    line = proc.stdout.readline().strip() if ready else ""
    if line != "ready":
        raise ns.KernelError(argv, proc.poll() or -1, f"transparent proxy did not start: {line or 'no answer'}")
    load = _LOADS[key] = IptablesLoad(testbed, log)
    return load


__all__ = ["IptablesLoad", "Redirect", "load_iptables", "reset"]
