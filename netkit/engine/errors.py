"""The errors netkit turns into `netkit <tool>: <message>` on stderr (see netkit.cli.tool)."""


class NetkitError(Exception):
    """A failure the user can act on; its message is one line, without a traceback. Exit 1."""


class KernelLacks(NetkitError):
    """This kernel lacks what the tool needs (a tracepoint, a BTF argument): it cannot run here.
    netkit top and export leave out the panel or metrics of such a tool and run the rest."""


class UsageError(NetkitError):
    """A bad combination of options, found by the tool rather than by click. Exit 2."""


class OutputError(NetkitError):
    """Standard output cannot be written (a full disk, a closed or broken descriptor). Exit 1."""
