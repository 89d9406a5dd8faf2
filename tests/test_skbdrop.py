"""netkit skbdrop against drops a child process causes on purpose, across a quiet veth pair
(tests/packetbed): the child lives in the host namespace and sends to the target's.

Each kind of drop has its own count, so two swapped reasons fail:
  NO_SOCKET       7 datagrams to a port nobody listens on (plus 5 from this test process, which
                  -p CHILD must leave out)
  NETFILTER_DROP  11 datagrams an nft rule in the target drops (its counter is the truth)
  SOCKET_RCVBUFF  40 datagrams of 1200 bytes to a socket with the smallest receive buffer,
                  read only afterwards: sent minus read were dropped (and UdpRcvbufErrors says
                  the same)
and 13 datagrams delivered normally, which are not drops. For tcpdrop (the same object) the
child also makes TCP drops: 3 SYNs to a closed port (NO_SOCKET; the target's TcpOutRsts
answers each) and 2 SYNs an nft rule drops (NETFILTER_DROP; the rule's counter), the
connections closed before the SYN would be sent again.

The skbdrop tracers run at once: -p CHILD in the target's namespace, everything in the target's
namespace with -s, and netkit's own (the host's) namespace, where none of this happens; three
tcpdrop tracers beside them (-p CHILD, -s, -6).

-p selects by the task the kernel runs for when it drops: on a veth the receive path runs in
the sender's softirq at the end of its send, unless the kernel hands that work to ksoftirqd
(softirq work over its 2 ms budget; and on kernels before 6.5 for as long as ksoftirqd is
running, which a 6.1 guest under emulation hit once: 56 of the child's UDP drops were
ksoftirqd's). The child therefore sends from CPU CHILD_CPU only, this process from the other,
and a fourth tracer counts ksoftirqd/CHILD_CPU: every drop the child caused is in exactly one of
the two, and none of this process's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import TRACEFS, assert_one_line_error, run_netkit
from packetbed import TARGET_ADDR, packet_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

CLOSED_PORT, FIREWALLED_PORT, SMALL_PORT, OPEN_PORT = 4444, 5555, 6666, 7777
NO_SOCKET, BY_OTHERS, FIREWALLED, FLOOD, DELIVERED = 7, 5, 11, 40, 13
CHILD_CPU, OTHERS_CPU = 0, 1
TCP_CLOSED_PORT, TCP_FIREWALLED_PORT, TCP_REFUSED, TCP_FIREWALLED = 4445, 5556, 3, 2
FLOOD_SIZE = 1200

# The child: enters the target namespace to open its two receiving sockets, goes back to the
# host's to send, waits for "go", sends, reads what reached the small socket, says how much.
CHILD = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def enter(ns):
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0, ctypes.get_errno()
    os.close(fd)
host, target, addr = sys.argv[1:4]
closed, firewalled, small_port, open_port, tcp_closed, tcp_firewalled, cpu = map(
    int, sys.argv[4:11])
os.sched_setaffinity(0, {{cpu}})        # its packets' softirq work: here or in ksoftirqd/cpu
enter(target)
small = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)        # the kernel's minimum
small.bind((addr, small_port))
small.setblocking(False)
normal = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
normal.bind((addr, open_port))
enter(host)
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sys.stdin.readline()
for port, count, size in ((closed, {no_socket}, 10), (firewalled, {firewalled_n}, 20),
                          (small_port, {flood}, {flood_size}), (open_port, {delivered}, 30)):
    for _ in range(count):
        out.sendto(b"d" * size, (addr, port))
for _ in range({tcp_refused}):
    with socket.socket() as s:
        assert s.connect_ex((addr, tcp_closed)) == 111                 # ECONNREFUSED
for _ in range({tcp_firewalled}):
    with socket.socket() as s:
        s.setblocking(False)
        assert s.connect_ex((addr, tcp_firewalled)) == 115             # EINPROGRESS
got = 0
try:
    while True:
        small.recv(4096)
        got += 1
except BlockingIOError:
    pass
normal.settimeout(5)
for _ in range({delivered}):
    normal.recv(100)
print(got, flush=True)
sys.stdin.readline()
""".format(no_socket=NO_SOCKET, firewalled_n=FIREWALLED, flood=FLOOD, flood_size=FLOOD_SIZE,
           delivered=DELIVERED, tcp_refused=TCP_REFUSED, tcp_firewalled=TCP_FIREWALLED)


def nft_counters(bed, ns: str) -> list[int]:
    """The packets each rule of table nkloss counted, in order."""
    ruleset = json.loads(bed.bed.run(ns, ["nft", "-j", "list", "table", "inet", "nkloss"]).stdout)
    rules = [item["rule"] for item in ruleset["nftables"] if "rule" in item]
    return [next(expr["counter"]["packets"] for expr in rule["expr"] if "counter" in expr)
            for rule in rules]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One round of the child's drops under three tracers: what each printed, and the
    kernel's own accounts of the round."""
    textfiles = tmp_path_factory.mktemp("skbdrop")
    for bed in packet_bed("skbdrop"):
        bed.bed.run(bed.target, ["nft", "-f", "-"], input=(
            "table inet nkloss {\n chain input {\n  type filter hook input priority 0;\n"
            f"  udp dport {FIREWALLED_PORT} counter drop\n"
            f"  tcp dport {TCP_FIREWALLED_PORT} counter drop\n }}\n}}\n"))
        child = subprocess.Popen([sys.executable, "-c", CHILD, bed.host, bed.target, TARGET_ADDR,
                                  str(CLOSED_PORT), str(FIREWALLED_PORT), str(SMALL_PORT),
                                  str(OPEN_PORT), str(TCP_CLOSED_PORT),
                                  str(TCP_FIREWALLED_PORT), str(CHILD_CPU)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            before = bed.counters(bed.target)
            tracers = {
                "child": bed.trace("skbdrop", "--netns", bed.target, "-p", str(child.pid),
                                   "--textfile", str(textfiles)),
                "ksoftirqd": bed.trace("skbdrop", "--netns", bed.target, "-n",
                                       f"ksoftirqd/{CHILD_CPU}"),
                "target": bed.trace("skbdrop", "--netns", bed.target, "-s"),
                "host": bed.trace("skbdrop"),
                "tcp_child": bed.trace("tcpdrop", "--netns", bed.target, "-p", str(child.pid)),
                "tcp_all": bed.trace("tcpdrop", "--netns", bed.target, "-s"),
                "tcp_v6": bed.trace("tcpdrop", "--netns", bed.target, "-6"),
            }
            mine = os.sched_getaffinity(0)
            try:
                os.sched_setaffinity(0, {OTHERS_CPU})
                with bed.sender() as other:
                    for _ in range(BY_OTHERS):
                        other.sendto(b"o" * 10, (TARGET_ADDR, CLOSED_PORT))
            finally:
                os.sched_setaffinity(0, mine)
            child.stdin.write("go\n")
            child.stdin.flush()
            received = int(child.stdout.readline())
            records = {name: tracer.stop() for name, tracer in tracers.items()}
            after = bed.counters(bed.target)
            yield {"records": records, "received": received, "child": child.pid,
                   "nft": nft_counters(bed, bed.target),
                   "snmp": {k: after[k] - before.get(k, 0) for k in after},
                   "prom": (textfiles / "netkit_skbdrop.prom").read_text(),
                   "target_inode": bed.inode(bed.target), "host_inode": bed.inode(bed.host)}
        finally:
            child.kill()
            child.wait()


def counts(summary: dict) -> Counter:
    """(reason, protocol) -> drops, stacks summed."""
    found: Counter = Counter()
    for drop in summary["drops"]:
        found[(drop["reason"], drop["protocol"])] += drop["count"]
    return found


def childs_expected(run) -> Counter:
    return Counter({("NO_SOCKET", "UDP"): NO_SOCKET, ("NETFILTER_DROP", "UDP"): FIREWALLED,
                    ("SOCKET_RCVBUFF", "UDP"): FLOOD - run["received"],
                    ("NO_SOCKET", "TCP"): TCP_REFUSED, ("NETFILTER_DROP", "TCP"): TCP_FIREWALLED})


@pytest.mark.vm
def test_the_childs_drops_are_counted_exactly_by_reason(run):
    dropped = FLOOD - run["received"]
    assert 0 < dropped < FLOOD and dropped not in (NO_SOCKET, FIREWALLED), run["received"]
    summary = run["records"]["child"].summary
    deferred = run["records"]["ksoftirqd"].summary
    print(f"the child's drops -p saw: {dict(counts(summary))}; ksoftirqd/{CHILD_CPU}'s: "
          f"{dict(counts(deferred))}")
    assert counts(summary) + counts(deferred) == childs_expected(run), (summary, deferred)
    assert all(d["family"] == "IPv4" for d in summary["drops"] + deferred["drops"])
    assert summary["total"] + deferred["total"] == \
        NO_SOCKET + FIREWALLED + dropped + TCP_REFUSED + TCP_FIREWALLED
    assert summary["netns"] == run["target_inode"] and summary["lost_events"] == 0


def test_exported_counters(run):
    """The child's tracer's textfile, with what ksoftirqd ran for the child (module doc)."""
    exported = Counter({(reason, protocol): float(n) for protocol, reason, n in re.findall(
        r'^netkit_skbdrop_drops_total\{protocol="(\w+)",reason="(\w+)"\} ([\d.]+)$',
        run["prom"], re.M)})
    assert exported + counts(run["records"]["ksoftirqd"].summary) == childs_expected(run), \
        run["prom"]


@pytest.mark.vm
def test_counts_agree_with_the_kernels_own_counters(run):
    """The whole namespace (no -p): this process's datagrams count too. UdpNoPorts,
    UdpRcvbufErrors and the nft rule's counter are the kernel's own accounts."""
    dropped = FLOOD - run["received"]
    summary = run["records"]["target"].summary
    found = counts(summary)
    assert found[("NO_SOCKET", "UDP")] == NO_SOCKET + BY_OTHERS == run["snmp"]["UdpNoPorts"]
    assert found[("SOCKET_RCVBUFF", "UDP")] == dropped == run["snmp"]["UdpRcvbufErrors"]
    assert found[("NETFILTER_DROP", "UDP")] == FIREWALLED == run["nft"][0]
    # skbdrop's own nstat-style deltas of the traced namespace say the same
    assert summary["snmp"]["UdpNoPorts"] == NO_SOCKET + BY_OTHERS
    assert summary["snmp"]["UdpRcvbufErrors"] == dropped
    # the normally delivered datagrams were not drops
    assert run["snmp"]["UdpInDatagrams"] == DELIVERED + run["received"]
    assert found[("NO_SOCKET", "TCP")] == TCP_REFUSED == run["snmp"]["TcpOutRsts"]
    assert found[("NETFILTER_DROP", "TCP")] == TCP_FIREWALLED == run["nft"][1]
    assert sum(found.values()) == summary["total"] == (NO_SOCKET + BY_OTHERS + FIREWALLED +
                                                       dropped + TCP_REFUSED + TCP_FIREWALLED)


def test_stacks_name_the_function_that_dropped(run):
    frames = {}
    for drop in run["records"]["target"].summary["drops"]:
        frames.setdefault(drop["reason"], []).extend(drop["stack"])
    assert any(f.startswith("__udp4_lib_rcv") for f in frames["NO_SOCKET"]), frames
    assert any(f.startswith("nf_hook_slow") for f in frames["NETFILTER_DROP"]), frames
    assert any("udp" in f for f in frames["SOCKET_RCVBUFF"]), frames
    # The tracing machinery (the BPF program, bpf_trace_run, __traceiter_ with the several
    # probes the tracers here attach to kfree_skb) is cut off the top: each stack starts at the
    # function that called the tracepoint, the kernel's drop function.
    stacks = [d["stack"] for d in run["records"]["target"].summary["drops"]]
    machinery = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "0x")
    assert not [f for stack in stacks for f in stack if f.startswith(machinery)], stacks
    assert all(stack[0].startswith(("sk_skb_reason_drop", "kfree_skb_reason")) for stack in
               stacks), stacks


def test_another_namespace_sees_none_of_it(run):
    summary = run["records"]["host"].summary
    assert summary["netns"] == run["host_inode"]
    assert not {r for r, _ in counts(summary)} & {"NO_SOCKET", "NETFILTER_DROP", "SOCKET_RCVBUFF"}


def tcp_drops(records) -> list[dict]:
    return [r for r in records if r["type"] == "drop"]


def test_tcpdrop_shows_each_dropped_segment(run):
    """One line per SYN the child's connects lost, for the child (the drops ran in its
    context: veth receives in the sender's softirq), with the kernel's reason; those the
    kernel ran in ksoftirqd instead (module doc) are in the ksoftirqd tracer's counts."""
    drops = tcp_drops(run["records"]["tcp_child"])
    port = {"NO_SOCKET": TCP_CLOSED_PORT, "NETFILTER_DROP": TCP_FIREWALLED_PORT}

    def syns(by_reason: Counter) -> Counter:
        """(reason, protocol) counts as the SYN lines tcpdrop shows for them."""
        return Counter({(reason, port[reason], ("SYN",), "-"): n
                        for (reason, protocol), n in by_reason.items() if protocol == "TCP"})
    seen = Counter((d["reason"], d["dport"], tuple(d["flags"]), d["state"]) for d in drops)
    assert seen + syns(counts(run["records"]["ksoftirqd"].summary)) == \
        syns(childs_expected(run)), drops
    assert {(d["saddr"], d["daddr"], d["family"], d["protocol"], d["pid"]) for d in drops} == \
        {("198.18.0.1", TARGET_ADDR, "IPv4", "TCP", run["child"])}
    assert len({d["sport"] for d in drops}) == len(drops)
    summary = run["records"]["tcp_child"].summary
    assert summary["events"] == len(drops) and summary["lost_events"] == 0


def test_tcpdrop_stacks_and_filters(run):
    drops = tcp_drops(run["records"]["tcp_all"])
    # the whole namespace: the same segments (no other TCP crossed the quiet link)
    assert len(drops) == run["snmp"]["TcpOutRsts"] + run["nft"][1]
    frames = {d["reason"]: d["stack"] for d in drops}
    assert any(f.startswith("tcp_v4_rcv") for f in frames["NO_SOCKET"]), frames
    assert any(f.startswith("nf_hook_slow") for f in frames["NETFILTER_DROP"]), frames
    assert not tcp_drops(run["records"]["tcp_v6"])          # -6: none of these IPv4 drops


def test_reason_names_are_the_kernels():
    """The names come from BTF; the kernel's own tracefs format prints the same table."""
    from netkit.engine.dropreasons import kernel_drop_reasons
    fmt = TRACEFS / "events/skb/kfree_skb/format"
    if not os.access(fmt, os.R_OK):
        from conftest import require_or_skip
        require_or_skip("tracefs is not readable")
    table = dict(re.findall(r'\{ (\d+), "(\w+)" \}', fmt.read_text()))
    reasons = kernel_drop_reasons()
    assert len(table) > 50
    for number, name in table.items():
        if name == "MAX":                   # the enum's end, not a reason: left unnamed
            continue
        assert reasons.name(int(number)) == name


def test_text_output(run):
    """One plain run: the table's reasons and the nstat-style counters."""
    out = run_netkit("skbdrop", "-d", "0.5")
    assert out.returncode == 0, out.stderr
    assert "SNMP" in out.stdout or "No SNMP counter moved" in out.stdout
    assert "Drops over" in out.stdout or "No drops in" in out.stdout


@pytest.mark.parametrize("args, code, text", [
    (["--netns", "nk-no-such-ns"], 1, "no network namespace nk-no-such-ns"),
    (["--netns", "/proc/self/ns/net", "--all-netns"], 2, "exclude each other"),
])
def test_bad_namespace_is_one_line(args, code, text):
    assert text in assert_one_line_error(run_netkit("skbdrop", *args), "skbdrop", code)


def test_the_tracing_machinery_is_cut_whichever_way_the_tracepoint_called(tmp_path):
    """Both shapes a kfree_skb stack takes: one probe (its static call reaches bpf_trace_run,
    the program unnamed: loaded after kallsyms was read) and several (__traceiter_, the program
    named, here by an earlier program's symbol). An unnamed frame below the top stays."""
    from netkit.engine.kallsyms import KernelSymbols
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("ffffffff81000000 T bpf_trace_run4\n"
                        "ffffffff81000400 T __traceiter_kfree_skb\n"
                        "ffffffff81000800 T sk_skb_reason_drop\n"
                        "ffffffff81000c00 T __udp4_lib_rcv\n"
                        "ffffffff81001000 t ip_protocol_deliver_rcu\n"
                        "ffffffffc0000000 t bpf_prog_0123456789abcdef_skbdrop_free\t[bpf]\n")
    symbols = KernelSymbols(kallsyms)
    caller = [0xffffffff81000890, 0xffffffff81000c10, 0xffffffff7f000000, 0xffffffff81001008, 0]
    one_probe = [0xffffffffd0000010, 0xffffffff8100010d] + caller
    several = [0xffffffffc00017ab, 0xffffffff8100010d, 0xffffffff81000441] + caller
    expected = ["sk_skb_reason_drop+0x90", "__udp4_lib_rcv+0x10", "0xffffffff7f000000",
                "ip_protocol_deliver_rcu+0x8"]
    assert symbols.stack(one_probe) == expected
    assert symbols.stack(several) == expected
