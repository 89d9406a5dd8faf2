"""The lifetime of sk_buffs, from their allocation (kmem:kmem_cache_alloc from the skb caches) to
their end (skb:consume_skb, skb:kfree_skb, or the slab free), as a log2 histogram per network
namespace, per interval and for the run; kept in the kernel. Counts what it saw and what it
could not.
"""
from __future__ import annotations

from pathlib import Path

from netkit.cli.options import (AllNetnsOpt, CountArg, DurationOpt, IntervalArg, JsonOpt,
                                MillisecondsOpt, NetnsOpt, NoColorOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import NetkitError
from netkit.export import ExportHub, export_options

SUMMARY = "sk_buff lifetimes, allocation to free, per network namespace (tracepoints)."

# Functions that allocate sk_buffs with kmem_cache_alloc (allocator_start[0] must be __alloc_skb,
# which allocates from both skb caches). MAX_ALLOCATORS in skblife.h.
ALLOCATORS = ["__alloc_skb", "skb_clone", "__build_skb", "build_skb", "slab_build_skb",
              "__netdev_alloc_skb", "__napi_alloc_skb", "napi_build_skb"]
HEAD_CACHE = Path("/sys/kernel/slab/skbuff_head_cache")
COUNTERS = ["allocs", "lives", "lost", "unseen"]

MAN = ManPage(
    description=(
        "skblife measures how long sk_buffs live: from their allocation from the kernel's skb "
        "caches (kmem:kmem_cache_alloc) to their end, the first of skb:consume_skb or "
        "skb:kfree_skb (the last reference dropped) and kmem:kmem_cache_free (the memory back in "
        "the slab: TCP's sk_buff pairs, and skbs freed without the skb tracepoints, end there), "
        "matched by address, and keeps a log2 histogram in the kernel.\n\n"
        "The caches are found rather than named: skbuff_fclone_cache is merged with unrelated "
        "caches of its size (here it shows as pool_workqueue), so skblife learns each cache from "
        "an allocation made inside __alloc_skb, and counts the fclone cache's allocations only "
        "from there; skbuff_head_cache is its own cache where the kernel hardens usercopy (its "
        "/sys/kernel/slab entry is a directory), otherwise its allocations count only from the skb "
        "allocator functions, found in /proc/kallsyms.\n\n"
        "What it cannot see: sk_buffs that the per-CPU NAPI cache hands out or takes back. That "
        "cache is filled and drained in bulk (kmem_cache_alloc_bulk, kmem_cache_free_bulk), which "
        "fire no per-object tracepoint, and it serves most NIC receive paths (napi_alloc_skb, "
        "napi_build_skb), TX completions in NAPI, GRO's merged heads and, on 6.18, the deferred "
        "free of what UDP and TCP sockets have read. So received packets of real NICs are mostly "
        "not timed (their allocation is unseen), and a UDP or TCP packet read by a local socket "
        "ends unseen. To keep a life whose end went unseen from running into the next life at the "
        "same address, each life is fingerprinted by its data buffer (skb->head) at the first "
        "device it meets; a later sighting with another buffer is counted as lost, not timed (so "
        "is an skb whose buffer was reallocated on the way: tunnels, or NAT and forwarding of "
        "cloned packets). The summary counts all this: allocations seen, lifetimes counted, lives "
        "lost, and sk_buffs freed to the slab whose allocation was not seen (allocated before the "
        "start or through the NAPI cache).\n\n"
        "An sk_buff belongs to the network namespace of the first device it meets (its transmit, "
        "net:net_dev_queue, or its receive, net:netif_receive_skb or napi_gro_receive_entry). "
        "skblife counts the namespace it runs in; --netns NETNS another (a name from `ip netns "
        "list`, a namespace file such as /proc/PID/ns/net, or its inode number) and --all-netns "
        "all of them, with sk_buffs that never met a device (netlink, UNIX sockets) apart, without "
        "a namespace.\n\n"
        "The original skblife.bt uses kprobes on kmem_cache_alloc and kmem_cache_free and "
        "recognises the caches by address (kaddr of skbuff_head_cache and skbuff_fclone_cache). It "
        "misses the same bulk paths, ends every life at the slab free (an skb returned to the NAPI "
        "cache never ends there, and its next life is added to it), and counts everything in one "
        "histogram in nanoseconds. Tracing every slab allocation of the system costs a little on "
        "each; the filters run first. The histograms are printed every INTERVAL when one is given, "
        "and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit skblife", "sk_buffs of this namespace, until Ctrl-C"),
        ("netkit skblife -m 10", "in milliseconds, every ten seconds"),
        ("netkit skblife --all-netns -d 30", "every namespace apart, for 30 s"),
        ("netkit skblife --json -d 5", "five seconds as NDJSON"),
    ],
    output=(
        "Per interval (with INTERVAL) and for the run: a heading (the time of day, or the run's "
        "length), then one histogram (per namespace with --all-netns, \"no device\" for sk_buffs "
        "that met none) with the count and the mean (exact, not from the buckets); rows are [low, "
        "high) ranges in us (ms with -m). Text output ends with the counts below.\n\n"
        "JSON (--json): one object per histogram with type \"hist\", scope (\"interval\" or "
        "\"run\"), ts, interval_s or duration_s, netns (inode; null for no device), count, "
        "lifetime_us_sum, lifetime_us_avg and lifetime_us, the histogram: a list of objects with "
        "low, high and count for the bucket [low, high) (lifetime_ms_* with -m). At the end one "
        "object with type \"summary\", duration_s, netns (null with --all-netns), allocations "
        "(sk_buff allocations seen, every namespace), lifetimes (ended and timed, every "
        "namespace), counted (of those, in the histograms), lost (lives whose end was not seen) "
        "and unseen_allocations (sk_buffs freed to the slab whose allocation was not seen).\n\n"
        "Exporters: netkit_skblife_lifetime_seconds, a histogram (label netns with "
        "--all-netns)."),
    see_also=["netkit-nettxlat(8)", "slabinfo(5)", "skblife.bt (BPF Performance Tools, ch. 10)"],
)


def allocator_rodata() -> dict:
    from netkit.engine.kallsyms import function_ranges
    found = function_ranges(ALLOCATORS)
    if "__alloc_skb" not in found:
        raise NetkitError("__alloc_skb is not in /proc/kallsyms: cannot tell sk_buff "
                          "allocations from others")
    ranges = [found[name] for name in ALLOCATORS if name in found]
    return {"allocator_start": b"".join(start.to_bytes(8, "little") for start, _ in ranges),
            "allocator_end": b"".join(end.to_bytes(8, "little") for _, end in ranges),
            "n_allocators": len(ranges),
            # a merged cache shows in /sys/kernel/slab as a link to the cache it joined
            "head_cache_shared": HEAD_CACHE.is_symlink() or not HEAD_CACHE.exists()}


def histograms(obj):
    from netkit.engine.devhist import Device, histograms as read
    return read(obj.map("hists"), Device.of)


def snapshot(ts: float, totals: dict, all_netns: bool, units):
    from netkit.engine.devhist import device_labels, metric_histograms
    from netkit.metrics import Snapshot
    return Snapshot("skblife", ts, histograms=metric_histograms(
        "skblife_lifetime", "sk_buff lifetime: allocation to free", totals,
        lambda device: device_labels(device, all_netns), unit_seconds=units.ns * 1e-9,
        sum_scale=1 / units.ns))


def _open(inode: int | None, units, rodata: dict | None = None):
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject
    # Its sk_buffs are told from other slab objects by their kmem_cache, the kmem
    # tracepoints' third argument on 6.1 and later (earlier kernels passed sizes there).
    return BPFObject("skblife", rodata={**namespaces.rodata(inode), "unit_ns": units.ns,
                                        **allocator_rodata(), **(rodata or {})},
                     arg_types={"kmem_cache_alloc": (2, "struct kmem_cache *"),
                                "kmem_cache_free": (2, "struct kmem_cache *")})


def export_source():
    """For `netkit export`: sk_buff lifetimes in netkit's own namespace (us)."""
    from netkit.cli.histloop import exported_histograms
    from netkit.engine import netns as namespaces
    from netkit.render.fields import Units
    units = Units(False)
    return exported_histograms(_open(namespaces.current(), units), histograms,
                               lambda ts, totals: snapshot(ts, totals, False, units))


def summary(out, obj, seconds: float, inode: int | None, totals: dict) -> None:
    from netkit.engine.counters import Counts
    c = Counts.of(obj.map("counts").lookup(0), COUNTERS)
    counted = sum(hist.count for hist in totals.values())
    if out.mode == "json":
        out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": inode,
                    "allocations": c["allocs"], "lifetimes": c["lives"], "counted": counted,
                    "lost": c["lost"], "unseen_allocations": c["unseen"]})
        return
    out.line()
    where = "every namespace" if inode is None else "this namespace"
    out.line(f"{c['allocs']} sk_buff allocations seen, {c['lives']} lifetimes timed ({counted} "
             f"in {where}), {c['lost']} lives whose end was not seen; {c['unseen']} sk_buffs "
             f"freed whose allocation was not seen")


@export_options("skblife")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    milliseconds: MillisecondsOpt = False,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.histloop import trace_histograms
    from netkit.cli.options import netns_of
    from netkit.render.fields import Units
    from netkit.render.histsets import HistSets, traced_namespaces

    inode = netns_of(netns, all_netns)
    units = Units(milliseconds)
    out = open_output(json, no_color, verbose)
    with _open(inode, units) as obj:
        if duration == 0:
            return
        view = HistSets(out, units.key("lifetime"), units.name, sum_scale=1 / units.ns,
                        title=lambda device: (f"netns {device.netns}" if device.netns else
                                              "no device") if inode is None else "sk_buffs",
                        fields=lambda device: {"netns": device.netns or None},
                        empty="(no sk_buff ended)")
        seconds, totals = trace_histograms(
            out, histograms(obj), view, interval=interval, count=count, duration=duration,
            exporters=exporters,
            snapshot=lambda ts, totals: snapshot(ts, totals, inode is None, units),
            banner=f"Tracing sk_buff lifetimes in {traced_namespaces(inode)}... "
                   f"Hit Ctrl-C to end.",
            heading="sk_buff lifetimes over {seconds:.1f} s:")
        summary(out, obj, seconds, inode, totals)
