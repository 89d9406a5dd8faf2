"""The one exception type netkit turns into `netkit <tool>: <message>` and exit status 1."""


class NetkitError(Exception):
    """A failure the user can act on; its message is one line, without a traceback."""
