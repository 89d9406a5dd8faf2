"""Per-hop bandwidth, latency and queueing along a path (pchar / pathchar's method).

For each hop (TTL) sends probes of several sizes (kernel timestamps), fits a line of RTT against
the bytes on the wire and reads each link's bandwidth from the difference of successive slopes
and its latency from the difference of intercepts. The line goes through the mean of each
size's lower RTTs (lowmean, the default) or through each size's minimum (pathchar's, -a). By
default it probes adaptively, stopping at each hop once the 95% intervals are tight; -R gives
pchar's fixed plan of R repetitions per size.
"""
from __future__ import annotations

import enum
import math
import socket
import time
from typing import Annotated, Optional

import typer

from netkit.cli.options import Ipv4Opt, Ipv6Opt, JsonOpt, NoColorOpt, Number, family_of, seconds
from netkit.cli.tool import ManPage
from netkit.engine.errors import NetkitError, UsageError
from netkit.net import pchar as pc
from netkit.render.output import Column

SUMMARY = "per-hop link bandwidth, latency and queueing along a path (pathchar's method)."

MAN = ManPage(
    description=(
        "pchar characterises each link of the path to DESTINATION, as Bruce Mah's pchar and Van "
        "Jacobson's pathchar do. For every hop (TTL) it sends probes of several sizes: UDP "
        "datagrams to a high port (default), ICMP echo requests (-p icmp) or TCP SYNs (-p tcp). "
        "Routers answer with ICMP time-exceeded; the destination with port-unreachable, an echo "
        "reply or a TCP reset. Each answer is matched to its probe exactly (a sequence number in "
        "the UDP payload, the ICMP sequence, the TCP sequence) and timed by the kernel: the "
        "software TX stamp of the probe and the RX stamp of the answer (SO_TIMESTAMPING).\n\n"
        "The RTT of a probe that met no queue grows linearly with the bytes on the wire; the "
        "slope is the sum of 8/bandwidth over the links crossed. Link k's bandwidth is "
        "8 / (slope_k - slope_k-1), its one-way latency half the difference of the intercepts, "
        "its queueing the mean time probes spent above the smallest RTT of their size (relative "
        "to the previous hop). Unlike pchar, the bytes on the wire count the answer too: Linux "
        "quotes up to 576 bytes of a probe in an ICMPv4 error (1280 in ICMPv6), so answers are "
        "not constant in size; like pchar, links are taken to have the same rate in both "
        "directions.\n\n"
        "Each hop's line comes from one of two methods, named per hop in the METHOD column (JSON "
        "\"method\"). lowmean (the default, -a lowmean): at each size, the mean of the lower "
        "part of the RTTs (from the 2nd to the 40th percentile), a line weighted by how precise "
        "each mean is, the standard error of a mean from its winsorized variance and Student's t "
        "with the values it keeps less one degrees of freedom; the latency from the lowest tenth "
        "of each size. lsq, kendall and lms (-a): pathchar's method, the smallest RTT of each "
        "size and a line through those minima by least squares, Theil-Sen (Kendall's tau) or "
        "least median of squares, its interval from the residuals. A minimum rests on the one "
        "luckiest probe of its size, a trimmed mean on many; a fast link right behind a slow one "
        "changes the slope so little that this decides it. On 16 runs of 100 Mbit/s right behind "
        "20 Mbit/s recorded on the test bed, 64 rounds of the two sizes a hop, the links' rms "
        "error was 0.44% with lowmean and 0.56% with the minima of the same probes, the worst "
        "2.5% and 4.2%. bench/pchar_probes.py prints both methods' figures per path shape. "
        "Ten times faster is where the differencing runs out: 100 Mbit/s right behind 10 "
        "Mbit/s, probed alone from the router before it, read 0.6-1.9% slower than set on a "
        "busy test bed, and from the difference of the two hops, as pchar must read it, "
        "-5.2% to +3.0% with 400-500 probes at each hop; within netkit's budget the worst of 40 "
        "runs was 5.8% off (README). "
        "Packet tailgating (nettimer: a big packet that expires at hop k with a "
        "small one right behind it to the far end) measures the same sums of 1/bandwidth, one "
        "way and across the whole path: interleaved with lowmean on the test bed, its standard "
        "errors were 3-5 times lowmean's for twice the packets. A least-squares fit of all hops "
        "at once, unconstrained, has the per-hop lines as its solution.\n\n"
        "Adaptive mode (the default, without -R). With lowmean: two sizes, the smallest probe "
        "and the MTU (a line is pinned down best at its two ends), 16 rounds of the pair at "
        "least, then one round at a time on this hop or the previous one (the one whose slope "
        "variance a round cuts most) until the bandwidth's 95% interval is within --precision "
        "(default 2%) of the estimate and the latency's within 30 us; never more probes than a "
        "fifth of what pchar's default plan sends to the hops walked so far (294 a hop, a hop "
        "may use what those before it left), at most 288 rounds a hop; once the path's end is "
        "known, what is left of that budget goes to the links still short of --precision, the "
        "widest interval first. Two sizes cannot show "
        "that RTT is not linear in size (as on a link slower one way than the other): -R, or "
        "-I, probe every size. With -a lsq, kendall or lms: 8 sizes spread "
        "from the smallest probe to the MTU, 4 rounds at least, one round at a time on the hop "
        "whose fit is less certain until the interval is within --precision (default 5%), the "
        "latency's within 30 us and the last round moved the estimate by at most half of "
        "--precision, or 36 rounds (288 probes). With -R, pchar's fixed plan: R probes at every "
        "size from -I to -m in steps of -I, with the estimator of -a.\n\n"
        "A link is shown as unreliable, never as a number, when the slope difference is negative "
        "or its interval includes zero (a fast link behind a slow one, measured with too few "
        "probes) or a line through minima fits them poorly (r2 below 0.9). A hop whose first "
        "probes go unanswered is shown as *. When "
        "answers stop in bursts after a hop has answered (routers rate-limit ICMP errors), the "
        "hop is flagged rate-limited and the gap between its probes is doubled (up to 2 s). A "
        "link is always measured against the last hop before it that answered: after a * hop, "
        "and for the first hop of -s N, it stands for the links in series up to that hop.\n\n"
        "UDP probes need no privilege; icmp and tcp need raw sockets (root or CAP_NET_RAW). "
        "Probes go one at a time; -g sets the mean gap between them."),
    examples=[
        ("netkit pchar -n 198.18.2.2", "characterise every link to a host, adaptively"),
        ("netkit pchar -n -R 32 -g 0.25 -a lsq 198.18.2.2", "pchar 1.5's default plan and method"),
        ("netkit pchar -6 -p icmp -n -H 3 fd00::2", "IPv6 with echo requests, hops 1 to 3"),
        ("netkit pchar -p tcp -P 443 -n host", "TCP SYNs to port 443"),
        ("netkit pchar --json -n 198.18.2.2", "NDJSON: one object per hop and a summary"),
    ],
    output=(
        "One line per hop: HOP, ADDRESS (and NAME unless -n), BANDWIDTH of the link that ends at "
        "this hop with its 95% interval (BW_LOW..BW_HIGH), LATENCY (one way, with its 95% "
        "half-width), QUEUE (mean queueing), LOSS, METHOD (lowmean, lsq, kendall or lms: where "
        "the hop's line came from), R2 of a line through minima (- for lowmean), PROBES sent and "
        "a NOTE (unreliable and why, rate-limited, destination).\n\n"
        "JSON: per hop an object with type \"hop\", ts, hop, address, name, answer (what "
        "answered most: time-exceeded, port-unreachable, echo-reply, tcp-reset, tcp-synack), "
        "probes, answered, "
        "loss_pct, bandwidth_bps, bandwidth_low_bps, bandwidth_high_bps (null when unbounded or "
        "unreliable), latency_us, latency_ci_us, queue_us, method, df (degrees of freedom of the "
        "Student's t behind both intervals), r2 (null for lowmean), slope_ns_per_byte, "
        "intercept_us, reliable, note, rate_limited, reached, rounds. At the end type "
        "\"summary\" with destination, address, family, protocol, interrupted (Ctrl-C: the hops "
        "so far are reported and the exit status is 0), probes, unstamped (answers "
        "the kernel did not timestamp, counted as lost), wall_s, reached, "
        "adaptive and pchar_default_probes (what pchar 1.5's default plan sends for the same "
        "hops)."),
    see_also=["pchar(8)", "traceroute(8)", "netkit-superping(8)"],
)

Protocol = enum.Enum("Protocol", {name: name for name in pc.PROBERS}, type=str)
Estimator = enum.Enum("Estimator", {name: name for name in pc.ESTIMATORS}, type=str)

DestArg = Annotated[str, typer.Argument(metavar="DESTINATION", show_default=False,
                                        help="Host at the end of the path.")]
RepsOpt = Annotated[Optional[int], typer.Option("-R", "--reps", min=1, max=100_000,
                                                show_default=False,
                                                help="Probes per size (pchar's fixed plan); "
                                                     "default: adaptive.")]
MtuOpt = Annotated[int, typer.Option("-m", "--mtu", min=64, max=65535,
                                     help="Largest probe, in IP bytes.")]
IncOpt = Annotated[Optional[int], typer.Option("-I", "--increment", min=1, max=65535,
                                               show_default=False,
                                               help="Step between probe sizes (pchar: 32); "
                                                    "adaptive default: the smallest probe and "
                                                    "-m (lowmean), 8 sizes (the others).")]
GapOpt = Annotated[Optional[float], typer.Option("-g", "--gap", click_type=seconds(0, 60),
                                                 show_default=False,
                                                 help="Mean seconds between probes (default "
                                                      "0.25 with -R, as pchar; 0.02 adaptive).")]
LastOpt = Annotated[int, typer.Option("-H", "--hops", min=1, max=255,
                                      help="Last hop to probe.")]
FirstOpt = Annotated[int, typer.Option("-s", "--first", min=1, max=255,
                                       help="First hop to probe.")]
ProtoOpt = Annotated[Protocol, typer.Option("-p", "--protocol", help="Probe kind.")]
PortOpt = Annotated[Optional[int], typer.Option("-P", "--port", min=1, max=65535,
                                                show_default=False,
                                                help="Destination port (udp: 32768, tcp: 80).")]
TimeoutOpt = Annotated[float, typer.Option("-t", "--timeout", click_type=seconds(0.001, 3600),
                                           help="Seconds to wait for each answer.")]
NoNamesOpt = Annotated[bool, typer.Option("-n", "--numeric", help="No reverse name lookups.")]
EstOpt = Annotated[Estimator, typer.Option("-a", "--estimator",
                                           help="lowmean: mean of each size's lower RTTs; or a "
                                                "line through minima: least squares, Theil-Sen "
                                                "(Kendall's tau) or least median of squares.")]
PrecOpt = Annotated[Optional[float], typer.Option("--precision",
                                                  click_type=Number(0.001, 1.0, name="fraction"),
                                                  show_default=False,
                                                  help="Adaptive stop: half-width of the "
                                                       "bandwidth's 95% interval, relative to "
                                                       "the estimate (default 0.02 for lowmean, "
                                                       "0.05 for the others).")]
SourceOpt = Annotated[Optional[str], typer.Option("--source", metavar="ADDR", show_default=False,
                                                  help="Send from this local address.")]


def fmt_bps(bps: float | None) -> str:
    if bps is None:
        return "-"
    unit, scale = next(((u, s) for u, s in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3))
                        if bps >= s), ("b/s", 1))
    v = bps / scale
    return f"{v:.{0 if v >= 99.95 else 1 if v >= 9.995 else 2}f} {unit}"   # 3 digits, no 1e+03


def fmt_us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def _round(v: float | None, digits: int = 3):
    return None if v is None or math.isinf(v) or math.isnan(v) else round(v, digits)


def hop_note(hop: pc.HopResult) -> str:
    notes = []
    if hop.silent:
        notes.append("no answer")
    elif hop.link and not hop.link.reliable:
        notes.append(f"unreliable: {hop.link.reason}")
    if hop.rate_limited:
        notes.append("rate-limited")
    if hop.fatal:
        notes.append(hop.fatal.kind)
    elif hop.reached:
        notes.append("destination")
    return "; ".join(notes)


def hop_record(hop: pc.HopResult, name: str | None) -> dict:
    link, fit = hop.link, hop.fit
    reliable = bool(link and link.reliable)
    return {
        "type": "hop", "hop": hop.ttl, "address": hop.responder, "name": name,
        "answer": hop.answer_kind,
        "probes": len(hop.samples), "answered": len(hop.answered),
        "loss_pct": round(100 * hop.loss, 1),
        "bandwidth_bps": _round(link.bandwidth_bps, 0) if reliable else None,
        "bandwidth_low_bps": _round(link.bandwidth_low_bps, 0) if reliable else None,
        "bandwidth_high_bps": _round(link.bandwidth_high_bps, 0) if reliable else None,
        "latency_us": _round(link.latency_s * 1e6) if link and link.latency_s is not None else None,
        "latency_ci_us": _round(link.latency_ci_s * 1e6) if link and link.latency_ci_s is not None
        else None,
        "queue_us": _round(hop.queue_s * 1e6) if hop.queue_s is not None else None,
        "method": fit.method if fit else None, "df": link.df if link else None,
        "r2": _round(fit.r2, 6) if fit and fit.r2 is not None else None,
        "slope_ns_per_byte": _round(fit.slope * 1e9, 6) if fit else None,
        "intercept_us": _round(fit.intercept * 1e6) if fit else None,
        "reliable": reliable, "note": hop_note(hop), "rate_limited": hop.rate_limited,
        "reached": hop.reached, "rounds": hop.rounds,
    }


def _interval(rec: dict) -> str:
    if not rec["reliable"]:
        return "-"
    return f"{fmt_bps(rec['bandwidth_low_bps'])}..{fmt_bps(rec['bandwidth_high_bps'])}"


class PcharView:
    def __init__(self, out, numeric: bool):
        self.out, self.numeric = out, numeric
        self._progress = None

    def start(self, dest: str, prober: pc.Prober, plan: pc.Plan, protocol: str) -> None:
        mode = "adaptive" if plan.reps is None else f"{plan.reps} reps"
        if self.out.mode != "json":
            self.out.note(f"pchar to {dest} ({prober.address}) using {protocol.upper()}, "
                          f"{len(plan.sizes)} sizes {plan.sizes[0]}..{plan.sizes[-1]} bytes, "
                          f"{mode}, gap {plan.gap_s:g} s")
        if self.out.mode == "rich":
            from rich.progress import BarColumn, Progress, TextColumn
            self._progress = Progress(TextColumn("hop {task.fields[ttl]}"), BarColumn(),
                                      TextColumn("{task.completed} probes"),
                                      console=self.out.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=plan.probes_per_hop_max, ttl="-")

    def probe(self, hop: pc.HopResult) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=len(hop.samples), ttl=hop.ttl)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def name(self, address: str | None) -> str | None:
        if self.numeric or address is None:
            return None
        try:
            return socket.gethostbyaddr(address)[0]
        except OSError:
            return None

    def hops(self, hops: list[pc.HopResult]) -> list[dict]:
        records = [hop_record(h, self.name(h.responder)) for h in hops]
        if self.out.mode == "json":
            for r in records:
                self.out.record(r)
            return records
        cols = [Column("HOP", 3), Column("ADDRESS", 16, "<")]
        if not self.numeric:
            cols.append(Column("NAME", 16, "<"))
        cols += [Column("BANDWIDTH", 10), Column("95% INTERVAL", 20), Column("LATENCY_us", 10),
                 Column("+-us", 6), Column("QUEUE_us", 8), Column("LOSS%", 5),
                 Column("METHOD", 7, "<"), Column("R2", 8), Column("PROBES", 6),
                 Column("NOTE", 4, "<")]
        rows = []
        for r in records:
            row = [r["hop"], r["address"] or "*"]
            if not self.numeric:
                row.append(r["name"] or "-")
            bw = fmt_bps(r["bandwidth_bps"]) if r["reliable"] else \
                ("unreliable" if r["address"] else "*")
            lat = r["latency_us"]
            rows.append(row + [bw, _interval(r), "-" if lat is None else f"{lat:.1f}",
                               "-" if r["latency_ci_us"] is None else f"{r['latency_ci_us']:.1f}",
                               "-" if r["queue_us"] is None else f"{r['queue_us']:.1f}",
                               f"{r['loss_pct']:.0f}", r["method"] or "-",
                               "-" if r["r2"] is None else f"{r['r2']:.5f}",
                               r["probes"], r["note"]])
        self.out.table(cols, rows)
        return records

    def summary(self, info: dict) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", **info})
            return
        self.out.line()
        self.out.line(f"{info['probes']} probes in {info['wall_s']:.1f} s "
                      f"(pchar 1.5's default plan: {info['pchar_default_probes']} probes for "
                      f"these {info['hops']} hops)")


def command(
    destination: DestArg,
    reps: RepsOpt = None,
    mtu: MtuOpt = 1500,
    increment: IncOpt = None,
    gap: GapOpt = None,
    last: LastOpt = 30,
    first: FirstOpt = 1,
    protocol: ProtoOpt = Protocol.udp,
    port: PortOpt = None,
    timeout: TimeoutOpt = 3.0,
    numeric: NoNamesOpt = False,
    estimator: EstOpt = Estimator.lowmean,
    precision: PrecOpt = None,
    source: SourceOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
):
    from netkit.render.output import Output

    family = {0: None, 4: socket.AF_INET, 6: socket.AF_INET6}[family_of(ipv4, ipv6)]
    if first > last:
        raise UsageError(f"first hop {first} is beyond the last hop {last}")
    protocol, estimator = protocol.value, estimator.value
    out = Output(json_mode=json, no_color=no_color)
    with pc.PROBERS[protocol](destination, family, port, timeout, source) as prober:
        if mtu < prober.min_size + 2 * (increment or 1):
            raise UsageError(f"-m {mtu} leaves no room for probes of several sizes "
                             f"(the smallest is {prober.min_size} bytes)")
        if increment or reps:
            sizes = pc.sizes_from(prober.min_size, mtu, increment or 32)
            if len(sizes) < 3:
                raise UsageError(f"-I {increment} leaves fewer than 3 sizes up to -m {mtu}")
        elif estimator == "lowmean":
            sizes = [prober.min_size, mtu]
        else:
            sizes = pc.spread_sizes(prober.min_size, mtu)
        gap = gap if gap is not None else (0.25 if reps else 0.02)
        plan = pc.Plan(sizes, reps, gap) if reps else \
            pc.adaptive_plan(estimator, sizes, gap, precision)
        view = PcharView(out, numeric)
        view.start(destination, prober, plan, protocol)
        started = time.monotonic()
        hops: list[pc.HopResult] = []
        interrupted = False
        try:
            pc.walk(prober, plan, first, last, estimator, on_probe=view.probe, hops=hops)
        except KeyboardInterrupt:          # Ctrl-C: report the hops probed so far, exit 0
            interrupted = True
            pc.refit(hops, estimator)
        finally:
            view.stop()
        wall = time.monotonic() - started
        view.hops(hops)
        reached = bool(hops) and hops[-1].reached
        view.summary({"destination": destination, "address": prober.address,
                      "family": 6 if prober.v6 else 4, "protocol": protocol,
                      "probes": prober.sent, "unstamped": prober.unstamped,
                      "wall_s": round(wall, 3), "reached": reached, "interrupted": interrupted,
                      "adaptive": reps is None, "hops": len(hops),
                      "pchar_default_probes": pc.pchar_default_probes(len(hops))})
    if interrupted:
        return
    fatal = hops[-1].fatal if hops else None
    if fatal and fatal.kind == "too-big":
        raise NetkitError(f"hop {fatal.ttl} ({fatal.responder}) cannot forward {fatal.size}-byte "
                          f"probes (MTU {fatal.mtu}): lower -m")
    if fatal:
        raise NetkitError(f"hop {fatal.ttl} ({fatal.responder}) answered {fatal.kind}: "
                          f"{destination} is unreachable")
    if not reached:
        raise NetkitError(f"{destination} did not answer within {last} hops")
