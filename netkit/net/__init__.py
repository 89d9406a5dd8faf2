"""Raw-socket machinery for probers: kernel timestamps, ICMP/UDP probes."""
