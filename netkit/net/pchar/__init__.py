"""pchar's backend: per-hop probes with kernel timestamps (probes), the estimators (estimate)
and the walk along the path with its adaptive plan (walk).

The method (Van Jacobson's pathchar, Bruce Mah's pchar): for each TTL send probes of several
sizes; the RTT that met empty queues grows linearly with the bytes on the wire, with slope =
the sum over the links crossed of 8 / bandwidth. The difference of the slopes of hop k and hop
k-1 gives link k's bandwidth, the difference of the intercepts (halved) its one-way latency,
and the spread above the minimum its queueing. pathchar takes the smallest RTT of each size for
that line; netkit's default (lowmean, estimate.py) averages the lower part of each size's RTTs
at the two ends of the size range, which a fast link behind a slow one needs (walk.py).

One refinement over pchar: the x of the fit is the bytes of the probe *plus* the bytes of its
answer. Linux routers quote up to 576 bytes of the probe in an ICMPv4 error (1280 in ICMPv6),
so answers grow with the probe; pchar's "answers are small and constant" does not hold and
would bias every slope. With x = probe + answer, the fit stays exact for links of the same rate
both ways (pathchar's assumption anyway).

Timing is from kernel software stamps (netkit.net.timestamps): TX when the driver takes the
probe, RX when the answer enters the stack. Answers are matched to probes exactly: a UDP probe
carries its sequence number in its payload (quoted back in the ICMP error), an echo carries it
as the ICMP sequence, a SYN as its TCP sequence number.
"""
from netkit.net.pchar.estimate import (ESTIMATORS, LATENCY_TRIM, LOW_TRIM, Fit, LinkEstimate,
                                       estimate_link, fit_hop, fit_kendall, fit_lms, fit_lowmean,
                                       fit_lsq, low_mean, min_rtt_points, t95)
from netkit.net.pchar.probes import (PROBERS, IcmpProber, PcharError, Prober, Sample, TcpProber,
                                     UdpProber)
from netkit.net.pchar.walk import (LOWMEAN_BUDGET_PER_HOP, PCHAR_PROBES_PER_HOP, RATE_LIMIT_RUN,
                                   SILENT_AFTER, HopResult, Plan, adaptive_plan,
                                   pchar_default_probes, probe_rounds, refit, sizes_from,
                                   spread_sizes, walk)

__all__ = ["ESTIMATORS", "LATENCY_TRIM", "LOW_TRIM", "Fit", "LinkEstimate", "estimate_link",
           "fit_hop", "fit_kendall", "fit_lms", "fit_lowmean", "fit_lsq", "low_mean",
           "min_rtt_points", "t95", "PROBERS", "IcmpProber", "PcharError", "Prober", "Sample",
           "TcpProber", "UdpProber", "LOWMEAN_BUDGET_PER_HOP", "PCHAR_PROBES_PER_HOP",
           "RATE_LIMIT_RUN", "SILENT_AFTER", "HopResult", "Plan", "adaptive_plan",
           "pchar_default_probes", "probe_rounds", "refit", "sizes_from", "spread_sizes", "walk"]
