"""The mutants `make mutate` plants: each a small bug a real change could make, in the C or the
Python of a tool, with the tests that must notice it. Keep the list up with the tools: a new
tool adds mutants of its counters, units, classification and ranking."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    area: str           # counters, units, estimator, classify, ranking, export, engine
    file: str
    old: str            # text that occurs exactly once in the file
    new: str
    tests: list[str]    # pytest selections that must fail
    what: str


SOCKSTAT = ["tests/test_sockstat.py"]
SOCONNLAT = ["tests/test_soconnlat.py"]
GETHOST = ["tests/test_gethostlatency.py"]
TCPNAGLE = ["tests/test_tcpnagle.py"]
SUPERPING = ["tests/test_superping.py", "tests/test_superping_netns.py"]
PCHAR = ["tests/test_pchar.py"]
NETSIZE = ["tests/test_netsize.py"]
NETTXLAT = ["tests/test_nettxlat.py"]
QDISCLAT = ["tests/test_qdisclat.py"]
SKBLIFE = ["tests/test_skblife.py"]
EXPORT = ["tests/test_export.py"]
RENDER = ["tests/test_render.py"]
SOFAMILY = ["tests/test_sofamily.py"]
SOPROTOCOL = ["tests/test_soprotocol.py"]
SOCONNECT = ["tests/test_soconnect.py"]
SOACCEPT = ["tests/test_soaccept.py"]
UDPCONNECT = ["tests/test_udpconnect.py"]
SOCKETIO = ["tests/test_socketio.py"]
SOCKSIZE = ["tests/test_socksize.py"]
SO1STBYTE = ["tests/test_so1stbyte.py"]
SORMEM = ["tests/test_sormem.py"]

MUTANTS = [
    # -- sockstat: counters ---------------------------------------------------------------------
    Mutant("counters", "bpf_programs/sockstat.bpf.c",
           "case NR_sendto: case NR_sendmsg: case NR_sendmmsg: c->send++; break;",
           "case NR_sendto: case NR_sendmsg: case NR_sendmmsg: c->recv++; break;", SOCKSTAT,
           "sockstat: sends counted as receives"),
    Mutant("counters", "bpf_programs/sockstat.bpf.c",
           "case NR_accept: case NR_accept4: c->accept++; break;",
           "case NR_accept: c->accept++; break;", SOCKSTAT,
           "sockstat: accept4() not counted"),
    Mutant("counters", "bpf_programs/sockstat.bpf.c",
           "case NR_socket: case NR_socketpair: c->socket++; break;",
           "case NR_socket: c->socket++; break;", SOCKSTAT,
           "sockstat: socketpair() not counted"),
    Mutant("counters", "bpf_programs/sockstat.bpf.c",
           "if (ret <= 0 || (flags & MSG_PEEK))", "if (ret <= 0)", SOCKSTAT,
           "sockstat: MSG_PEEK reads counted as received bytes"),
    Mutant("counters", "netkit/tools/sockstat.py",
           '("tx_bytes", "TX_BYTES", "tx_bytes", "sock_send_length"),\n'
           '    ("rx_bytes", "RX_BYTES", "rx_bytes", "sock_recv_length"),',
           '("tx_bytes", "TX_BYTES", "rx_bytes", "sock_send_length"),\n'
           '    ("rx_bytes", "RX_BYTES", "tx_bytes", "sock_recv_length"),', SOCKSTAT,
           "sockstat: tx and rx bytes swapped in JSON"),
    Mutant("ranking", "netkit/tools/sockstat.py",
           'kv[1]["rx_bytes"]), reverse=True)', 'kv[1]["rx_bytes"]))', SOCKSTAT,
           "sockstat --top: quietest process first"),
    # -- soconnlat: units and classification -------------------------------------------------------
    Mutant("units", "bpf_programs/soconnlat.bpf.c", "hist_record(&v->lat, lat / unit_ns);",
           "hist_record(&v->lat, lat);", SOCONNLAT,
           "soconnlat: histograms in ns, not in the unit asked for"),
    Mutant("units", "netkit/tools/soconnlat.py", "unit_ns * 1e-9, dict(labels)))",
           "unit_ns * 1e-6, dict(labels)))", SOCONNLAT + EXPORT,
           "soconnlat: exported histogram 1000x too slow"),
    Mutant("classify", "bpf_programs/soconnlat.bpf.c", "err = RESULT_CLOSED;", "err = 0;",
           SOCONNLAT, "soconnlat: a connect closed by its owner reported as OK"),
    Mutant("classify", "netkit/tools/soconnlat.py", 'MODES = ("blocking", "nonblocking")',
           'MODES = ("nonblocking", "blocking")', SOCONNLAT,
           "soconnlat: blocking and non-blocking swapped"),
    # -- gethostlatency ---------------------------------------------------------------------------
    Mutant("units", "bpf_programs/gethostlatency.bpf.c",
           "hist_record(h, latency / (hist_ms ? 1000000 : 1000));",
           "hist_record(h, latency / (hist_ms ? 1000 : 1000));", GETHOST,
           "gethostlatency --hist -m: slots in us"),
    Mutant("units", "bpf_programs/gethostlatency.bpf.c",
           "hist_record(h, latency / (hist_ms ? 1000000 : 1000));",
           "hist_record(h, 2 * latency / (hist_ms ? 1000000 : 1000));", GETHOST,
           "gethostlatency --hist: latencies doubled"),
    Mutant("units", "netkit/tools/gethostlatency.py", "latency_ms = e.latency_ns / 1e6",
           "latency_ms = e.latency_ns / 1e3", GETHOST,
           "gethostlatency: LATms in us"),
    Mutant("classify", "bpf_programs/gethostlatency.bpf.c",
           "call->depth = 2;		/* gethostbyname{,2} calling its _r variant */",
           "call->depth = 1;		/* gethostbyname{,2} calling its _r variant */", GETHOST,
           "gethostlatency: the nested _r call ends the outer one"),
    Mutant("classify", "netkit/tools/gethostlatency.py",
           '1: "HOST_NOT_FOUND", 2: "TRY_AGAIN"', '1: "TRY_AGAIN", 2: "HOST_NOT_FOUND"', GETHOST,
           "gethostlatency: h_errno names swapped"),
    # -- tcpnagle ----------------------------------------------------------------------------------
    Mutant("classify", "bpf_programs/tcpnagle.bpf.c",
           "\t\treturn CAUSE_RWND;\n\tif (in_flight >= tp->snd_cwnd)\n\t\treturn CAUSE_CWND;",
           "\t\treturn CAUSE_CWND;\n\tif (in_flight >= tp->snd_cwnd)\n\t\treturn CAUSE_RWND;",
           TCPNAGLE, "tcpnagle: rwnd and cwnd holds swapped"),
    Mutant("classify", "bpf_programs/tcpnagle.bpf.c", "\t\treturn CAUSE_MORE;\n",
           "\t\treturn CAUSE_OTHER;\n", TCPNAGLE, "tcpnagle: MSG_MORE holds called other"),
    Mutant("units", "bpf_programs/tcpnagle.bpf.c", "\t\thist_record(hist, ns / 1000);",
           "\t\thist_record(hist, ns / 100);", TCPNAGLE, "tcpnagle: hold histogram 10x off"),
    Mutant("classify", "netkit/tools/tcpnagle.py",
           '    if nonagle & TCP_NAGLE_CORK:\n        return "cork"\n', "", TCPNAGLE,
           "tcpnagle: TCP_CORK sends counted as nagle/nodelay"),
    # -- superping ---------------------------------------------------------------------------------
    Mutant("units", "bpf_programs/superping.bpf.c", "hist_record(h, (now - req->tx_ns) / 1000);",
           "hist_record(h, (now - req->tx_ns) / 100);", SUPERPING,
           "superping: in-stack histogram 10x off"),
    Mutant("classify", "bpf_programs/superping.bpf.c", "key.netns = dev_netns(skb->dev);\n\tif (!netns_selected(key.netns))",
           "key.netns = dev_netns(skb->dev);\n\tif (0)", SUPERPING,
           "superping: replies taken in any namespace"),
    Mutant("units", "netkit/tools/superping.py", "return None if ns is None else round(ns / 1e3, 3)",
           "return None if ns is None else round(ns / 1e6, 3)", SUPERPING,
           "superping: JSON RTTs in ms under _us keys"),
    Mutant("estimator", "netkit/net/superping.py",
           "math.sqrt(max(0.0, mean_sq - mean * mean))", "max(0.0, mean_sq - mean * mean)",
           SUPERPING, "superping: mdev is the variance"),
    # -- pchar -------------------------------------------------------------------------------------
    Mutant("estimator", "netkit/net/pchar/estimate.py", "    lat = (fit.intercept - pi) / 2\n",
           "    lat = fit.intercept - pi\n", PCHAR, "pchar: round-trip latency shown as one way"),
    Mutant("estimator", "netkit/net/pchar/estimate.py",
           "            return q if d == 60 else t", "            return 1.96", PCHAR,
           "pchar: 95% intervals without the t-factor"),
    Mutant("estimator", "netkit/net/pchar/estimate.py",
           "s.rtt_ns < best[s.size].rtt_ns", "s.rtt_ns > best[s.size].rtt_ns", PCHAR,
           "pchar: largest RTT per size instead of the smallest"),
    Mutant("estimator", "netkit/net/pchar/estimate.py",
           "return sorted((s.size + s.reply_size, s.rtt_ns / 1e9)",
           "return sorted((s.size, s.rtt_ns / 1e9)", PCHAR,
           "pchar: the answer's bytes left out of the fit"),
    # -- the packet tools --------------------------------------------------------------------------
    Mutant("counters", "bpf_programs/netsize.bpf.c",
           "count_size(skb->dev, skb->len, POINT_RECV);",
           "count_size(skb->dev, skb->len, POINT_NIC_RECV);", NETSIZE,
           "netsize: the stack's receive counted as the NIC's"),
    Mutant("classify", "bpf_programs/devhist.h", "if (!per_device || !dev)", "if (1)",
           NETSIZE + NETTXLAT, "devhist: --dev ignored, one histogram per namespace"),
    Mutant("classify", "bpf_programs/nettxlat.bpf.c", "if (!netns_selected(netns))", "if (0)",
           NETTXLAT, "nettxlat: transmits counted in every namespace"),
    Mutant("units", "bpf_programs/nettxlat.bpf.c", "hist_record_ns(h, now - start->ts);",
           "hist_record_ns(h, (now - start->ts) / 10);", NETTXLAT,
           "nettxlat: latencies 10x short"),
    Mutant("counters", "bpf_programs/qdisclat.bpf.c",
           "bpf_loop(packets < MAX_BULK ? packets : MAX_BULK, time_one, &walk, 0);",
           "bpf_loop(1, time_one, &walk, 0);", QDISCLAT,
           "qdisclat: only the first packet of a bulk dequeue timed"),
    Mutant("units", "bpf_programs/qdisclat.bpf.c", "hist_record_ns(h, walk->now - stamp->ts);",
           "hist_record_ns(h, 2 * (walk->now - stamp->ts));", QDISCLAT,
           "qdisclat: waits doubled"),
    Mutant("classify", "bpf_programs/qdisclat.bpf.c", "if (!filter_kind[0])", "if (1)",
           QDISCLAT, "qdisclat: -q KIND keeps every kind"),
    Mutant("classify", "bpf_programs/skblife.bpf.c",
           "if (!birth || another_life(birth, addr, head) || birth->head)",
           "if (!birth || another_life(birth, addr, head))", SKBLIFE,
           "skblife: an sk_buff belongs to the last device it met, not the first"),
    Mutant("units", "bpf_programs/skblife.bpf.c",
           "hist_record_ns(h, bpf_ktime_get_ns() - birth->ts);",
           "hist_record_ns(h, (bpf_ktime_get_ns() - birth->ts) / 4);", SKBLIFE,
           "skblife: lifetimes 4x short"),
    Mutant("export", "netkit/export/prometheus.py",
           'HistogramMetricFamily(f"{metric_name(name)}_{histograms[0].unit}",',
           'HistogramMetricFamily(f"{metric_name(name)}_seconds",', EXPORT,
           "prometheus: byte histograms named _seconds"),
    # -- the socket tools (issue 15) ------------------------------------------------------------
    Mutant("counters", "bpf_programs/newconn.h", "count(sk, CALL_ACCEPT);",
           "count(sk, CALL_CONNECT);", SOFAMILY + SOPROTOCOL,
           "sofamily/soprotocol: accepts counted as connects"),
    Mutant("classify", "bpf_programs/sockfd.h",
           "return BPF_CORE_READ(sock, state) != SS_UNCONNECTED;", "return false;",
           SOFAMILY, "sockfd.h: a connect() status check counted as a new connection"),
    Mutant("classify", "bpf_programs/soprotocol.bpf.c",
           "key->protocol = BPF_CORE_READ(sk, sk_protocol);",
           "key->protocol = BPF_CORE_READ(sk, sk_type);", SOPROTOCOL,
           "soprotocol: the socket type shown as its protocol number"),
    Mutant("units", "bpf_programs/soconnect.bpf.c",
           "e->lat_ns = bpf_ktime_get_ns() - p->start_ns;", "e->lat_ns = bpf_ktime_get_ns();",
           SOCONNECT, "soconnect: a timestamp shown as the latency"),
    Mutant("classify", "bpf_programs/soconnect.bpf.c",
           "if (e.protocol != IPPROTO_UDP ||", "if (e.protocol == 0 ||", UDPCONNECT,
           "udpconnect: TCP connects shown too"),
    Mutant("engine", "netkit/render/sockets.py",
           "ip_address(raw.family, raw.addr, unmap=False)",
           "ip_address(raw.family, raw.addr, unmap=True)", UDPCONNECT,
           "socket endpoints: an IPv4-mapped peer shown as the IPv4 address it was not given"),
    Mutant("classify", "bpf_programs/soaccept.bpf.c", "if (ret == -EAGAIN) {",
           "if (ret == -22) {", SOACCEPT, "soaccept: EINVAL hidden, EAGAIN shown"),
    Mutant("engine", "bpf_programs/sockaddr.h",
           "ep->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));",
           "ep->port = BPF_CORE_READ(sk, __sk_common.skc_num);", SOACCEPT,
           "sock_peer: the local port given as the peer's"),
    Mutant("counters", "bpf_programs/socketio.bpf.c", "if (!(flags & MSG_PEEK))", "if (1)",
           SOCKETIO, "socketio: MSG_PEEK reads counted"),
    Mutant("counters", "bpf_programs/socketio.bpf.c", "if (ret > 0)\n\t\tv->bytes += ret;",
           "v->bytes += ret;", SOCKETIO, "socketio: a failed call's -errno added to bytes"),
    Mutant("ranking", "netkit/tools/socketio.py", 'key=lambda kv: (-kv[1]["calls"],',
           'key=lambda kv: (kv[1]["calls"],', SOCKETIO, "socketio -T: quietest first"),
    Mutant("counters", "bpf_programs/socksize.bpf.c", "if (size <= 0 || !task_selected())",
           "if (size < 0 || !task_selected())", SOCKSIZE,
           "socksize: reads of 0 bytes (end of file) counted as sizes"),
    Mutant("classify", "bpf_programs/socksize.bpf.c", "record(SIZE_WRITE, ret);",
           "record(SIZE_READ, ret);", SOCKSIZE, "socksize: writes counted as reads"),
    Mutant("export", "netkit/engine/perprocess.py", '{"comm": comm}, unit)',
           '{"comm": comm})', SOCKSIZE, "per-process histograms of bytes exported as seconds"),
    Mutant("export", "netkit/cli/runs.py",
           "return snapshot(ts, counts.totals()) if exporters and snapshot else None",
           "return snapshot(ts, delta) if exporters and snapshot else None", SOCKSIZE,
           "counting tools: exporters get the interval's change, not cumulative totals"),
    Mutant("engine", "netkit/render/keyed.py", 'f"{self.key}_sum": hist.sum,',
           'f"{self.key}_sum": hist.count,', SOCKSIZE, "HistList: the count given as the sum"),
    Mutant("units", "bpf_programs/so1stbyte.bpf.c", "(now - s->start_ns) / unit_ns);",
           "(now - s->start_ns) / 1000000);", SO1STBYTE,
           "so1stbyte: milliseconds in the microsecond histogram"),
    Mutant("classify", "bpf_programs/so1stbyte.bpf.c", "if (s->ino == sock_ino(sk)) {",
           "if (s->ino != sock_ino(sk)) {", SO1STBYTE,
           "so1stbyte: the socket identity check inverted"),
    Mutant("classify", "bpf_programs/sormem.bpf.c", "kind = EVENT_SOCKET_RCVBUFF;",
           "kind = EVENT_SOCKET_BACKLOG;", SORMEM,
           "sormem: a full receive buffer called a full backlog"),
    Mutant("classify", "bpf_programs/sormem.bpf.c", "if (!reader && task_filtered())",
           "if (!reader && 0)", SORMEM, "sormem -p: events of sockets nobody selected read"),
    Mutant("counters", "bpf_programs/sormem.bpf.c",
           "(__u32)BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter));",
           "(__u32)BPF_CORE_READ(sk, sk_rcvbuf));", SORMEM,
           "sormem: rcvbuf sampled as rmem_alloc"),
    # -- exporters ---------------------------------------------------------------------------------
    Mutant("export", "netkit/export/prometheus.py", "((2 << i) - 1) * unit_seconds",
           "((1 << i) - 1) * unit_seconds", EXPORT,
           "prometheus: log2 bucket bounds one slot low"),
    Mutant("export", "netkit/export/graphite.py",
           'add(f"{base}.sum_{histogram.unit}", histogram.sum * histogram.unit_seconds)',
           'add(f"{base}.sum_{histogram.unit}", histogram.sum)', EXPORT,
           "graphite: histogram sums in the tool's unit, not seconds"),
    Mutant("export", "netkit/tools/sockstat.py",
           "return export_snapshot(ts, counts.totals(), view.unavailable) if exporters else None",
           "return export_snapshot(ts, delta, view.unavailable) if exporters else None",
           SOCKSTAT + EXPORT, "sockstat: exporters get per-interval counts, not cumulative ones"),
    # -- the shared layer --------------------------------------------------------------------------
    Mutant("engine", "netkit/engine/hist.py",
           "return Log2Hist([a - b for a, b in zip(self.slots, earlier.slots)],",
           "return Log2Hist([a + b for a, b in zip(self.slots, earlier.slots)],",
           RENDER + SOCONNLAT, "Log2Hist: a difference that adds"),
    Mutant("engine", "netkit/engine/counters.py", "                self.map.delete(raw_key)\n",
           "", RENDER + SOCKSTAT, "CumulativeMap: retired entries stay in the map"),
    Mutant("engine", "netkit/render/hist.py", '"high": 1 << (i + 1), "count": c}',
           '"high": (1 << (i + 1)) - 1, "count": c}', RENDER + SUPERPING,
           "hist_json: inclusive upper bounds"),
    Mutant("engine", "netkit/render/fields.py", "def ip_address(family: int, raw: bytes, unmap: bool = True)",
           "def ip_address(family: int, raw: bytes, unmap: bool = False)", RENDER + TCPNAGLE,
           "addresses: IPv4-mapped IPv6 shown as IPv6"),
    Mutant("engine", "netkit/cli/loop.py", "            if late >= self.interval:\n                deadline += late\n",
           "", RENDER, "Ticker: catch-up ticks after a stop"),
]
