"""The libbpf engine: load a tool's BPF object, read its maps and ring buffers, detach cleanly."""
from netkit.engine.errors import NetkitError

__all__ = ["NetkitError"]
