"""netkit/engine/netns.py: naming a network namespace the way users do, and one clear line for a
name that is none. No root needed: /proc/self/ns/* are this process's own. (The BPF side and
named namespaces are tested in test_superping_netns.py.)"""
import os

import pytest

from conftest import assert_one_line_error, run_netkit
from netkit.engine import netns
from netkit.engine.errors import NetkitError

OWN = os.stat("/proc/self/ns/net").st_ino


@pytest.mark.parametrize("spec", ["/proc/self/ns/net", "/proc/thread-self/ns/net", str(OWN),
                                  f"net:[{OWN}]", f"  {OWN} "])
def test_the_forms_of_one_namespace_agree(spec):
    assert netns.resolve(spec) == OWN == netns.current()


def test_an_inode_need_not_be_ours():
    """An inode is taken as given (a namespace may be held by no process and no file)."""
    assert netns.resolve(str(OWN + 1)) == OWN + 1


@pytest.mark.parametrize("spec, text", [
    ("4242", "4242 is not a network namespace inode"),
    (str(1 << 32), "is not a network namespace inode"),
    ("/proc/self/ns/mnt", "/proc/self/ns/mnt is a mnt namespace, not a network namespace"),
    ("/proc/self/ns/uts", "is a uts namespace"),
    ("/etc/hostname", "/etc/hostname is not a namespace file"),
    ("/", "/ is not a namespace file"),
    ("/proc/999999999/ns/net", "no network namespace /proc/999999999/ns/net"),
    ("nk-no-such-ns", "no network namespace nk-no-such-ns: there is no /run/netns/nk-no-such-ns"),
    ("", "an empty network namespace name"),
])
def test_a_bad_namespace_is_one_clear_error(spec, text):
    with pytest.raises(NetkitError) as exc:
        netns.resolve(spec)
    assert text in str(exc.value) and "\n" not in str(exc.value)


def test_rodata_is_zero_for_all():
    assert netns.rodata(None) == {"filter_netns": 0}
    assert netns.rodata(OWN) == {"filter_netns": OWN}


@pytest.mark.parametrize("args, code, text", [
    (["--passive", "--netns", "nk-no-such-ns"], 1, "no network namespace nk-no-such-ns"),
    (["--passive", "--netns", "4242"], 1, "4242 is not a network namespace inode"),
    (["--passive", "--netns", "/proc/self/ns/pid"], 1, "is a pid namespace"),
    (["--passive", "--netns", "/proc/self/ns/net", "--all-netns"], 2,
     "--netns and --all-netns exclude each other"),
    (["--netns", "/proc/self/ns/net", "127.0.0.1"], 2, "select namespaces for --passive only"),
    (["--all-netns", "127.0.0.1"], 2, "select namespaces for --passive only"),
])
def test_superping_netns_bad_input_is_one_line(args, code, text):
    """Checked before anything is loaded: the same answer with or without root."""
    assert text in assert_one_line_error(run_netkit("superping", *args), "superping", code)
