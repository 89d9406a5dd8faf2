"""What the tcp* tools show of a socket: its state names, its addresses and ports (struct
tcp_tuple of bpf_programs/tcpsock.h, IPv4-mapped IPv6 already folded to IPv4 by the kernel
side). Owners are render/sockets.py's, event lines render/events.py's."""
from __future__ import annotations

from typing import NamedTuple

from netkit.render.fields import ip_address

# include/net/tcp_states.h: the kernel ABI behind /proc/net/tcp and sock_diag (values 1..13;
# tests/test_tcpstates.py ties them to this kernel's BTF).
STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
          "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
          "BOUND_INACTIVE")


def state_name(state: int) -> str:
    """ESTABLISHED for 1...; "-" for 0 (an event with no socket: tcpdrop's)."""
    if state == 0:
        return "-"
    return STATES[state] if 0 < state < len(STATES) else f"STATE{state}"


class Endpoints(NamedTuple):
    family: int                 # 4 or 6
    laddr: str
    lport: int
    raddr: str
    rport: int


def endpoints(t) -> Endpoints:
    """A struct tcp_tuple as text addresses and integer ports."""
    return Endpoints(t.family, ip_address(t.family, t.laddr), t.lport,
                     ip_address(t.family, t.raddr), t.rport)
