#!/usr/bin/env python3
"""The kprobe originals as anchors: superping and tcpnagle by kprobes beside netkit's tracepoints.

Our host kernel (6.18, locked down) has no kprobes; Debian 12's 6.1, booted under qemu by
tools/vmtest, has. In one guest boot this runs bench/anchors/*.bt (netkit's own kprobe versions
of the book's superping.bt and tcpnagle.bt, bpftrace 0.17) on the same workloads as netkit:

  superping  echoes on loopback and to a veth peer in a namespace, IPv4 and IPv6:
             active: `netkit superping` sends them, superping.bt times the same echoes (matched
               on family, id and seq): per-echo difference kprobe - netkit in-stack;
             passive: iputils ping sends them, `netkit superping --passive` and superping.bt
               time them;
             split: superping_split.bt stamps each echo at the kprobes and at netkit's
               tracepoints in one program, so the difference is taken apart into its TX part
               (ip_push_pending_frames or ip6_send_skb -> net_dev_start_xmit) and its RX
               part (netif_receive_skb -> icmp_rcv);
             cost: iputils ping's own RTT without probes and with superping.bt alone attached
               (4 kprobe hits per echo: the send and icmp_rcv of the request and the reply).
  tcpnagle   a client writing small bursts across a link that adds 20 ms each way (test bed,
             linkemu), Nagle on / TCP_CORK / TCP_NODELAY. netkit tcpnagle needs the tracepoint
             sock:sock_send_length (6.3+): on 6.1 it refuses to run, so tcpnagle.bt runs on the
             guest and netkit tcpnagle on the host, on the identical workload.

    flock /tmp/netkit-heavy.lock .venv/bin/python bench/kprobe_anchors.py [-c N] [-i S] [--json F]

Run it as root under the heavy lock like every benchmark; it takes /tmp/netkit-vm.lock itself
for the guest's boot (one boot: about 6 minutes under TCG with -c 200). Not part of CI: TCG
timing is slow and noisy (every instruction emulated), so the figures explain the differences;
they are no thresholds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.procio import read_until  # noqa: E402
from tools.testbed import Link, TestBed  # noqa: E402

ANCHORS = ROOT / "bench" / "anchors"
PY = str(ROOT / ".venv" / "bin" / "python")
NETKIT = [PY, "-m", "netkit"]
VM_LOCK = "/tmp/netkit-vm.lock"
MARK = "ANCHOR-RESULT "          # the guest's result line, read off the console by the host

# tcpnagle workload (as tests/test_tcpnagle.py's, in this script's own code)
NAGLE_PORT = 5199                # nagle, cork, nodelay on NAGLE_PORT + 0, 1, 2
NAGLE_MODES = ["nagle", "cork", "nodelay"]
BURSTS, WRITES, SIZE, GAP_S, DELAY_S = 5, 4, 100, 0.002, 0.02

CLIENT = r"""
import fcntl, json, socket, struct, sys, time
cfg = json.loads(sys.argv[1])
s = socket.create_connection((cfg["addr"], cfg["port"]))
if cfg["mode"] == "nodelay":
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

def drain():       # SIOCOUTQ: bytes not yet acknowledged
    deadline = time.monotonic() + 10
    while struct.unpack("i", fcntl.ioctl(s.fileno(), 0x5411, b"\0" * 4))[0]:
        assert time.monotonic() < deadline, "data still unacknowledged"
        time.sleep(0.005)

for burst in range(cfg["bursts"]):
    drain()
    if cfg["mode"] == "cork":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for i in range(cfg["writes"]):
        assert s.send(b"x" * cfg["size"]) == cfg["size"]
        time.sleep(cfg["gap"])
    if cfg["mode"] == "cork":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
drain()
s.close()
"""

SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET6); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", int(sys.argv[1]))); srv.listen(1)
print("ready", flush=True)
c, _ = srv.accept()
while c.recv(65536):
    pass
"""


def expected_held(mode: str) -> int:
    """Held sends the workload makes: Nagle holds all but the first write of a burst (the first
    is acknowledged 40 ms later, the others follow within 6 ms); cork holds every write until
    the uncork; nodelay holds none."""
    return {"nagle": BURSTS * (WRITES - 1), "cork": BURSTS * WRITES, "nodelay": 0}[mode]



class Bpftrace:
    """A bench/anchors script under bpftrace, started when its BEGIN has printed. Stopped by
    repeated SIGINT: bpftrace 0.17 may miss one that does not land in its epoll_wait
    (tests/conftest.py's BpftracePeer)."""

    def __init__(self, script: str, *args: str, timeout: float = 120):
        self.proc = subprocess.Popen(["bpftrace", "-B", "none", str(ANCHORS / script), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ok, self.early = read_until(self.proc, self.proc.stdout, "ATTACHED", timeout)
        if not ok:
            self.proc.kill()
            raise RuntimeError(f"bpftrace {script} did not start: "
                               f"{self.proc.communicate()[1].decode(errors='replace')[-500:]}")

    def stop(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.early + self.proc.communicate(timeout=2)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                pass
        self.proc.kill()
        raise RuntimeError("bpftrace ignored SIGINT")


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p10": None, "p90": None, "mean": None}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "median": statistics.median(values), "p10": pick(0.1),
            "p90": pick(0.9), "mean": statistics.fmean(values)}


# ---------------------------------------------------------------------------------------------
# guest side (6.1): everything that needs kprobes, in one boot


def echo_lines(text: str, tag: str) -> dict[tuple[int, int, int], list[int]]:
    """{(family, id, seq): [fields...]} from bpftrace lines "TAG family id seq n..."."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] == tag:
            fam, ident, seq, *rest = map(int, parts[1:])
            out[(fam, ident, seq)] = rest
    return out


def ping_rtts(text: str) -> list[float]:
    return [float(m) * 1e3 for m in re.findall(r"time=([\d.]+) ms", text)]


def superping_guest(count: int, interval: float) -> dict:
    res: dict = {"cases": {}}
    with TestBed([Link()]) as bed:
        cases = {          # name: (namespace or None for the root one, address, family)
            "lo IPv4": (None, "127.0.0.1", 4), "lo IPv6": (None, "::1", 6),
            "veth IPv4": (bed.host, bed.target_addr(4), 4),
            "veth IPv6": (bed.host, bed.target_addr(6), 6)}

        def run(ns, argv, **kw):
            argv = ["ip", "netns", "exec", ns, *argv] if ns else argv
            return subprocess.run(argv, capture_output=True, text=True, **kw)

        def popen(ns, argv, **kw):
            argv = ["ip", "netns", "exec", ns, *argv] if ns else argv
            return subprocess.Popen(argv, **kw)

        # 1. iputils ping without any probe: the cost baseline
        for name, (ns, addr, fam) in cases.items():
            out = run(ns, ["ping", f"-{fam}", "-c", str(count), "-i", str(interval), addr]).stdout
            res["cases"].setdefault(name, {})["ping_bare_us"] = summary(ping_rtts(out))

        # 2. superping.bt beside netkit superping (active), then beside --passive and ping
        bt = Bpftrace("superping.bt")
        try:
            # the same pings with superping.bt's kprobes alone: what they cost an echo
            for name, (ns, addr, fam) in cases.items():
                out = run(ns, ["ping", f"-{fam}", "-c", str(count), "-i", str(interval),
                               addr]).stdout
                res["cases"][name]["ping_with_kprobes_us"] = summary(ping_rtts(out))
            for name, (ns, addr, fam) in cases.items():
                out = run(ns, [*NETKIT, "superping", "--json", "-c", str(count), "-i",
                               str(interval), "-W", "2", addr], timeout=count * interval * 20 + 120)
                replies = [r for r in map(json.loads, out.stdout.splitlines())
                           if r["type"] == "reply" and not r["dup"]]
                res["cases"][name]["active"] = [(fam, r["id"], r["seq"], r["stack_rtt_us"],
                                                r["kernel_rtt_us"], r["user_rtt_us"])
                                               for r in replies]
            for name, (ns, addr, fam) in cases.items():
                # --passive in the namespace where the ping runs; ping goes on until it is done
                passive = popen(ns, [*NETKIT, "superping", "--passive", "--json", "-c",
                                     str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                ok, _ = read_until(passive, passive.stderr, "Tracing", 120)
                if not ok:
                    passive.kill()
                    raise RuntimeError(f"netkit superping --passive did not start ({name})")
                ping = popen(ns, ["ping", f"-{fam}", "-c", str(count + 20), "-i", str(interval),
                                  addr], stdout=subprocess.PIPE, text=True)
                out, _ = passive.communicate(timeout=count * interval * 20 + 120)
                ping.communicate(timeout=count * interval * 20 + 120)
                echoes = [r for r in map(json.loads, out.decode().splitlines())
                          if r["type"] == "echo"]
                res["cases"][name]["passive"] = [(r["family"], r["id"], r["seq"],
                                                  r["stack_rtt_us"]) for r in echoes]
        finally:
            text = bt.stop()
        res["kprobe_echoes"] = [[*k, *v] for k, v in echo_lines(text, "ECHO").items()]

        # 3. the split: kprobes and tracepoints on the same echoes (ping's)
        bt = Bpftrace("superping_split.bt")
        try:
            for name, (ns, addr, fam) in cases.items():
                run(ns, ["ping", f"-{fam}", "-c", str(count), "-i", str(interval), addr])
        finally:
            text = bt.stop()
        res["split"] = [[*k, *v] for k, v in echo_lines(text, "SPLIT").items()]
    return res


def tcpnagle_workload(bed: TestBed, mode: str, port: int) -> None:
    server = bed.popen(bed.target, [PY, "-c", SERVER, str(port)], stdout=subprocess.PIPE,
                       text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        cfg = {"addr": bed.target_addr(4), "port": port, "mode": mode, "bursts": BURSTS,
               "writes": WRITES, "size": SIZE, "gap": GAP_S}
        bed.run(bed.host, [PY, "-c", CLIENT, json.dumps(cfg)], timeout=120)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def tcpnagle_guest() -> dict:
    refused = subprocess.run([*NETKIT, "tcpnagle", "-d", "0"], capture_output=True, text=True)
    res: dict = {"netkit_rc": refused.returncode, "netkit_stderr": refused.stderr.strip(),
                 "modes": {}}
    with TestBed([Link(delay_s=DELAY_S)]) as bed:
        bt = Bpftrace("tcpnagle.bt", str(NAGLE_PORT), str(len(NAGLE_MODES)))
        try:
            for i, mode in enumerate(NAGLE_MODES):
                tcpnagle_workload(bed, mode, NAGLE_PORT + i)
        finally:
            text = bt.stop()
    for i, mode in enumerate(NAGLE_MODES):
        port = NAGLE_PORT + i
        m = {"holds_us": [], "blocked_us": []}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("HOLD", "BLOCKED") and int(parts[1]) == port:
                m["holds_us" if parts[0] == "HOLD" else "blocked_us"].append(int(parts[2]))

        def counted(mapname: str) -> dict[str, int]:
            # bpftrace prints "@map[port, key]: n" or "@map[port]: n" at exit
            found = {}
            for key, n in re.findall(rf"^@{mapname}\[{port}(?:, (\d+))?\]: (\d+)$", text, re.M):
                found[key or "all"] = int(n)
            return found
        m["held"] = counted("held").get("all", 0)
        m["missed"] = counted("missed").get("all", 0)
        m["sends_by_nonagle"] = counted("sends_by_nonagle")
        m["xmit_by_nonagle"] = counted("xmit_by_nonagle")
        m["xmit_true"] = counted("xmit_true").get("all", 0)
        res["modes"][mode] = m
    return res


def guest_main(count: int, interval: float) -> int:
    result = {"kernel": os.uname().release,
              "bpftrace": subprocess.run(["bpftrace", "--version"], capture_output=True,
                                         text=True).stdout.strip()}
    # the guest's modules load from the shared /lib/modules; nothing loads them by itself here
    for module in ("veth", "tun"):
        subprocess.run(["modprobe", module], check=False)
    try:
        result["superping"] = superping_guest(count, interval)
        result["tcpnagle"] = tcpnagle_guest()
    except Exception as e:          # report what was measured so far, and why the rest is not
        result["error"] = f"{type(e).__name__}: {e}"
    print(MARK + json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


# ---------------------------------------------------------------------------------------------
# host side (6.18): boot the guest, run netkit tcpnagle here, compare


def run_guest(count: int, interval: float) -> dict:
    cmd = ["flock", VM_LOCK, PY, "-m", "tools.vmtest", "run", "--", PY,
           str(ROOT / "bench" / "kprobe_anchors.py"), "--guest", "-c", str(count), "-i",
           str(interval)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            # vmtest's own line: boot time and run time, without the wait for the lock
            result["vmtest"] = " ".join(l for l in proc.stderr.splitlines()
                                        if l.startswith("vmtest:"))
            return result
    raise RuntimeError(f"no result from the guest (exit {proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}{proc.stderr[-2000:]}")


def tcpnagle_host() -> dict:
    res: dict = {"kernel": os.uname().release, "modes": {}}
    with TestBed([Link(delay_s=DELAY_S)]) as bed:
        for i, mode in enumerate(NAGLE_MODES):
            port = NAGLE_PORT + i
            tool = subprocess.Popen([*NETKIT, "tcpnagle", "--json", "-D", str(port)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ok, err = read_until(tool, tool.stderr, "Tracing", 60)
            if not ok:
                tool.kill()
                raise RuntimeError(f"netkit tcpnagle did not start: {err}")
            tcpnagle_workload(bed, mode, port)
            tool.send_signal(signal.SIGINT)
            out, _ = tool.communicate(timeout=60)
            s = [r for r in map(json.loads, out.decode().splitlines())
                 if r["type"] == "summary"][-1]
            res["modes"][mode] = {
                "sends": s["sends"], "flags": s["flags"],
                "held": sum(s["held"].values()), "held_by_cause": {k: v for k, v in
                                                                  s["held"].items() if v},
                "holds": sum(s["holds"].values()),
                "hold_us_sum": sum(s["hold_us_sum"].values()),
                "hist_us": s["hist_us"], "missed": s["missed"], "overflow": s["overflow"]}
    return res


def fmt(v, digits=0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def hist_median(hist: list[dict]) -> str:
    """The log2 bucket holding the median hold (netkit keeps no single holds)."""
    total = sum(b["count"] for b in hist)
    seen = 0
    for b in hist:
        seen += b["count"]
        if total and seen * 2 >= total:
            return f"[{b['low']}, {b['high']})"
    return "-"


def report_superping(sp: dict, kernel: str) -> dict:
    kp = {(f, i, s): rtt / 1000 for f, i, s, rtt in sp["kprobe_echoes"]}
    split = {(f, i, s): (tx, rx, krtt, trtt) for f, i, s, tx, rx, krtt, trtt in sp["split"]}
    print(f"\nsuperping on {kernel} (TCG guest): superping.bt (kprobes) vs netkit superping "
          f"(tracepoints), same echoes matched on family, id, seq; medians in us")
    head = (f"{'case':<10} {'mode':<8} {'echoes':>6} {'both':>5} {'kprobe':>8} {'netkit':>8} "
            f"{'diff':>7} {'diff p10':>8} {'diff p90':>8} {'kernel':>7}")
    print(head)
    figures: dict = {}
    for name, case in sp["cases"].items():
        for mode in ("active", "passive"):
            rows = case.get(mode, [])
            pairs = [(kp[(r[0], r[1], r[2])], r[3], *(r[4:5] or [None])) for r in rows
                     if (r[0], r[1], r[2]) in kp and r[3] is not None]
            k = summary([p[0] for p in pairs])
            n = summary([p[1] for p in pairs])
            d = summary([p[0] - p[1] for p in pairs])
            kern = summary([p[2] for p in pairs if p[2] is not None])
            figures[f"{name} {mode}"] = {"echoes": len(rows), "matched": len(pairs),
                                         "kprobe": k, "netkit": n, "diff": d, "kernel": kern}
            print(f"{name:<10} {mode:<8} {len(rows):>6} {len(pairs):>5} {fmt(k['median']):>8} "
                  f"{fmt(n['median']):>8} {fmt(d['median']):>7} {fmt(d['p10']):>8} "
                  f"{fmt(d['p90']):>8} {fmt(kern['median']):>7}")
    print("\nwhere the difference sits (superping_split.bt: both RTTs of each ping echo in one "
          "program), medians in us")
    print(f"{'case':<10} {'echoes':>6} {'kprobe':>8} {'tracept':>8} {'diff':>7} "
          f"{'TX part':>8} {'RX part':>8} {'ping':>7} {'ping+kp':>8}")
    fams = {"lo IPv4": 4, "lo IPv6": 6, "veth IPv4": 4, "veth IPv6": 6}
    for name, case in sp["cases"].items():
        # Each case is one ping process with its own echo id, and the cases ran one after the
        # other (lo before veth): of one family's ids, in the order bpftrace printed them, the
        # first is the loopback ping's and the second the veth ping's.
        ids = list(dict.fromkeys(k[1] for k in split if k[0] == fams[name]))
        idx = 0 if name.startswith("lo") else 1
        if len(ids) > idx:
            rows = [v for k, v in split.items() if k[0] == fams[name] and k[1] == ids[idx]]
        else:
            rows = []
        tx = summary([r[0] / 1000 for r in rows])
        rx = summary([r[1] / 1000 for r in rows])
        kr = summary([r[2] / 1000 for r in rows])
        tr = summary([r[3] / 1000 for r in rows])
        dd = summary([(r[2] - r[3]) / 1000 for r in rows])
        figures[f"{name} split"] = {"n": len(rows), "tx": tx, "rx": rx, "kprobe": kr,
                                    "tracepoint": tr, "diff": dd,
                                    "ping_bare": case["ping_bare_us"],
                                    "ping_with_kprobes": case.get("ping_with_kprobes_us")}
        print(f"{name:<10} {len(rows):>6} {fmt(kr['median']):>8} {fmt(tr['median']):>8} "
              f"{fmt(dd['median']):>7} {fmt(tx['median']):>8} {fmt(rx['median']):>8} "
              f"{fmt(case['ping_bare_us']['median']):>7} "
              f"{fmt((case.get('ping_with_kprobes_us') or {}).get('median')):>8}")
    return figures


def report_tcpnagle(guest: dict, host: dict, guest_kernel: str) -> None:
    print(f"\ntcpnagle: {BURSTS} bursts of {WRITES} writes of {SIZE} bytes, {GAP_S * 1e3:g} ms "
          f"apart, across a link adding {DELAY_S * 1e3:g} ms each way")
    print(f"netkit tcpnagle on {guest_kernel}: exit {guest['netkit_rc']}: "
          f"{guest['netkit_stderr']!r}")
    print(f"so tcpnagle.bt ran on {guest_kernel} (TCG guest) and netkit tcpnagle on "
          f"{host['kernel']} (this host), on the identical workload")
    print(f"{'mode':<8} {'expect':>6} {'kp held':>7} {'kp holds':>8} {'kp med_us':>9} "
          f"{'kp mean':>8} {'blocked':>7} {'xmit':>5} {'nk held':>7} {'nk holds':>8} "
          f"{'nk mean':>8} {'nk median bucket':>16}")
    for mode in NAGLE_MODES:
        g, h = guest["modes"][mode], host["modes"][mode]
        hs = summary(g["holds_us"])
        nk_mean = h["hold_us_sum"] / h["holds"] if h["holds"] else None
        print(f"{mode:<8} {expected_held(mode):>6} {g['held']:>7} {len(g['holds_us']):>8} "
              f"{fmt(hs['median']):>9} {fmt(hs['mean']):>8} {len(g['blocked_us']):>7} "
              f"{sum(g['xmit_by_nonagle'].values()):>5} {h['held']:>7} {h['holds']:>8} "
              f"{fmt(nk_mean):>8} {hist_median(h['hist_us']):>16}")
    for mode in NAGLE_MODES:
        g, h = guest["modes"][mode], host["modes"][mode]
        print(f"  {mode}: kprobe tcp_write_xmit calls by nonagle {g['xmit_by_nonagle']}, "
              f"returned true {g['xmit_true']}, blocked periods {g['blocked_us']} us; sends by "
              f"nonagle {g['sends_by_nonagle']}, missed {g['missed']}; netkit sends "
              f"{h['sends']}, causes {h['held_by_cause']}, missed {h['missed']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--count", type=int, default=100, help="echoes per case")
    ap.add_argument("-i", "--interval", type=float, default=0.02, help="seconds between echoes")
    ap.add_argument("--json", metavar="FILE", help="also write every figure here")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("kprobe_anchors: needs root (namespaces, BPF, qemu)", file=sys.stderr)
        return 1
    if args.guest:
        return guest_main(args.count, args.interval)
    if not shutil.which("bpftrace"):
        print("kprobe_anchors: bpftrace is not installed (apt-get install bpftrace)",
              file=sys.stderr)
        return 1
    try:
        guest = run_guest(args.count, args.interval)
        host = tcpnagle_host() if "tcpnagle" in guest else None
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"kprobe_anchors: {e}", file=sys.stderr)
        return 1
    print(f"guest: {guest['kernel']}, {guest['bpftrace']}; {guest['vmtest']}")
    if "error" in guest:
        print(f"guest stopped early: {guest['error']}")
    figures = {}
    if "superping" in guest:
        figures["superping"] = report_superping(guest["superping"], guest["kernel"])
    if host:
        report_tcpnagle(guest["tcpnagle"], host, guest["kernel"])
    if args.json:
        Path(args.json).write_text(json.dumps({"guest": guest, "host": host,
                                               "figures": figures}, indent=1))
    return 0 if "error" not in guest else 1


if __name__ == "__main__":
    sys.exit(main())
