"""netkit: Linux network diagnostics for the terminal."""
__version__ = "0.1.0"
