"""How netkit writes what a packet's headers say: its protocol (an EtherType, or an IP protocol
number: IANA's, the same on every kernel) and TCP flags as bcc's tcpdrop shows them."""
from __future__ import annotations

ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "802.1Q", 0x88A8: "802.1ad",
              0x8847: "MPLS", 0x88CC: "LLDP", 0x8035: "RARP", 0x0004: "802.2"}
IP_PROTOCOLS = {1: "ICMP", 2: "IGMP", 4: "IPIP", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE",
                50: "ESP", 51: "AH", 58: "ICMPv6", 103: "PIM", 112: "VRRP", 132: "SCTP",
                136: "UDPLite", 0: "HOPOPTS", 43: "ROUTING", 44: "FRAGMENT", 60: "DSTOPTS",
                59: "NONE"}
TCP_FLAGS = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"]


def ethertype_name(ethertype: int) -> str:
    if not ethertype:
        return "-"
    return ETHERTYPES.get(ethertype, f"0x{ethertype:04x}")


def protocol_name(ethertype: int, family: int, ip_protocol: int) -> str:
    """The protocol a dropped packet carried: TCP, UDP, ICMP... for IP, else its EtherType."""
    if family:
        return IP_PROTOCOLS.get(ip_protocol, f"IP proto {ip_protocol}")
    return ethertype_name(ethertype)


def tcp_flags(byte: int) -> str:
    """FIN|SYN|ACK as bcc's tcpdrop writes them."""
    return "|".join(name for bit, name in enumerate(TCP_FLAGS) if byte & (1 << bit)) or "-"
