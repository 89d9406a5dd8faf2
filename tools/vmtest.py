#!/usr/bin/env python3
"""Run a command on a second kernel: Debian 12's own 6.1 under qemu, with this host's root.

    python -m tools.vmtest run [--timeout S] [--accel kvm|tcg|auto] -- CMD [ARG...]
    python -m tools.vmtest pytest [PYTEST-ARGS...]     # the `vm` test subset, in one boot
    python -m tools.vmtest info                        # kernel, initramfs, accelerator

Our machines run one kernel (6.18: no wireless stack, no kprobes). Debian's linux-image-amd64
(6.1) has both, and mac80211_hwsim gives it two Wi-Fi radios. This boots that kernel with a small
initramfs (busybox and the modules that mount the root: virtio, 9p, overlay), shares the host's
/ read-only over 9p under a tmpfs overlay (the guest may write anywhere; nothing reaches the
host), and runs CMD there as root in the same directory with the same venv, so the BPF objects
are exactly the ones built for 6.18. The other modules load from the shared /lib/modules.

CMD's output streams to this terminal through the guest's serial console; its exit status is
this program's. Everything comes from apt (qemu-system-x86, linux-image-amd64, busybox-static:
tools/bootstrap.sh installs them); nothing is downloaded.

KVM is used when /dev/kvm exists and a guest started with it answers within a few seconds
(a nested KVM boot can hang, as it did here once); otherwise TCG, qemu's software emulation,
whose boot takes about 20 s on this machine.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/netkit-vmtest")
# What the initramfs loads to mount the root; the rest modprobe finds on the shared root.
BOOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]
# Passed into the guest when set here (CI turns skips into failures; NETKIT_* tune the tests).
PASS_ENV = ("CI", "NO_COLOR", "TERM", "COLUMNS")
PASS_ENV_PREFIX = "NETKIT_"
GUEST_UP, GUEST_DONE = "vmtest: guest up", "vmtest: guest done"
POWER_DOWN = re.compile(r"^\[\s*[\d.]+\] reboot: Power down")
boot_s = [0.0]          # seconds from qemu's start to the guest's init reaching the command


class VMError(Exception):
    pass


def kernel_image() -> tuple[Path, str]:
    """The newest installed Debian 6.1 kernel image and its release (not the host's kernel)."""
    images = sorted(glob.glob("/boot/vmlinuz-6.1.*"))
    if not images:
        raise VMError("no Debian 6.1 kernel in /boot: apt-get install linux-image-amd64 "
                      "(tools/bootstrap.sh does)")
    image = Path(images[-1])
    release = image.name.removeprefix("vmlinuz-")
    if not Path("/lib/modules", release).is_dir():
        raise VMError(f"/lib/modules/{release} is missing: reinstall linux-image-{release}")
    return image, release


def module_closure(release: str, names: list[str]) -> list[Path]:
    """The module files for names and what they depend on, dependencies first; built-in
    modules (modules.builtin) need no file."""
    moddir = Path("/lib/modules", release)
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(p).name).replace("-", "_"): p for p in deps}
    ordered: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in deps[path]:
            visit(dep)
        ordered.append(path)

    builtin = (moddir / "modules.builtin").read_text()
    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin:
            raise VMError(f"module {name} is neither a file nor built into {release}")
    return [moddir / p for p in ordered]


INIT = r"""#!/bin/sh
# vmtest's init: mount the host's root under an overlay, run the command, power off.
export PATH=/bin
mkdir -p /proc /sys /dev /lower /upper /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "/modules/$m" || echo "vmtest: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /lower ||
    { echo "vmtest: cannot mount the host root"; poweroff -f; }
mount -t tmpfs -o size=2g tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot ||
    { echo "vmtest: overlay failed"; poweroff -f; }
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
# /tmp stays the overlay's (a checkout under the host's /tmp must be seen; writes stay here)
mount -t tmpfs tmpfs $R/run
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t tracefs tracefs $R/sys/kernel/tracing
mkdir -p $R/run/vmtest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 vmtestio $R/run/vmtest
# The kernel loads modules on demand (nfnetlink for nft, tun...) by running the modprobe in
# /proc/sys/kernel/modprobe from ITS root, which is this initramfs: send it into the chroot.
printf '#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-in-root
chmod 755 /bin/modprobe-in-root
echo /bin/modprobe-in-root > /proc/sys/kernel/modprobe
echo "vmtest: guest up"
chroot $R /bin/sh /run/vmtest/command.sh < /dev/console > /dev/console 2>&1
sync
echo "vmtest: guest done"
poweroff -f
"""


def build_initramfs(release: str) -> Path:
    """A cpio (newc) archive: busybox, init and the boot modules; rebuilt when they change."""
    busybox = Path("/bin/busybox")         # busybox-static's: the initramfs has no libc
    if not busybox.exists():
        raise VMError("busybox is missing: apt-get install busybox-static")
    modules = module_closure(release, BOOT_MODULES)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"initramfs-{release}.cpio"
    sources = [busybox, *modules, Path(__file__)]
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in sources):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        shutil.copy2(busybox, t / "bin/busybox")
        for applet in ("sh", "mount", "mkdir", "insmod", "cat", "echo", "chroot", "poweroff",
                       "sync", "sleep", "printf", "chmod"):
            (t / "bin" / applet).symlink_to("busybox")
        (t / "modules").mkdir()
        for m in modules:
            shutil.copy2(m, t / "modules" / m.name)
        (t / "modules.list").write_text("".join(m.name + "\n" for m in modules))
        (t / "init").write_text(INIT)
        (t / "init").chmod(0o755)
        names = sorted(str(p.relative_to(t)) for p in t.rglob("*"))
        tmp_out = out.with_suffix(".tmp")
        with open(tmp_out, "wb") as f:
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], input="\n".join(names).encode(),
                           cwd=t, stdout=f, check=True)
        tmp_out.rename(out)
    return out


# TCG runs both vCPUs on one host thread (thread=single), not one thread each (multi): qemu 7.2's
# multi-threaded TCG can keep running a stale translation of kernel text that another vCPU has
# just patched. A static key flipped by text_poke_bp (a tool attaching to raw_syscalls:sys_enter,
# say) then leaves a vCPU trapping on an int3 that is no longer in memory: the int3 handler sees
# the new bytes, backs up to re-run them, and the stale block traps again, for ever (a soft lockup
# at syscall_trace_enter on both vCPUs; flipping that key in a loop in the guest while both vCPUs
# make syscalls hangs it within a minute). One thread never runs a vCPU while another patches.
# The vm subset takes 250-350 s instead of 175-245 s.
TCG = ["-accel", "tcg,thread=single", "-cpu", "max"]
# A guest that soft-locks panics (panic=-1: qemu exits at once, the console shows the stack)
# instead of hanging until the timeout.
KERNEL_CMDLINE = "console=ttyS0 quiet loglevel=3 softlockup_panic=1 panic=-1 rdinit=/init"


def qemu_command(image: Path, initramfs: Path, iodir: Path, accel: str) -> list[str]:
    cpu = ["-enable-kvm", "-cpu", "kvm64"] if accel == "kvm" else TCG
    return ["qemu-system-x86_64", *cpu, "-m", "2048", "-smp", str(min(os.cpu_count() or 1, 2)),
            "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
            "-kernel", str(image), "-initrd", str(initramfs),
            "-append", KERNEL_CMDLINE,
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={iodir},mount_tag=vmtestio,security_model=passthrough",
            "-device", "virtio-rng-pci", "-nic", "none"]


def command_script(argv: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIX)}
    lines = ["set -e", "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "export HOME=/root NETKIT_IN_VM=1 PYTHONDONTWRITEBYTECODE=1",
             *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())),
             "ip link set lo up", "hostname netkit-vm",
             # the host's open-file limit, not init's 1024: soconnlat's 1,000 concurrent
             # connects ran out of descriptors in the guest (and counted 333 of 1,000)
             f"ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}",
             # modules a fresh boot has not loaded: tun (the test bed's link emulator opens
             # /dev/net/tun, which udev would have made), veth
             "modprobe -a tun veth 2>/dev/null || true",
             f"cd {shlex.quote(str(cwd))}", "set +e",
             # through a pipe, as in a script: the tools print plain columns, not a terminal's
             f"{{ {shlex.join(argv)}; echo $? > /run/vmtest/status; }} < /dev/null 2>&1 | cat"]
    return "\n".join(lines) + "\n"


def boot(argv: list[str], *, accel: str, timeout: float, cwd: Path, out=sys.stdout) -> int:
    """Boot, run argv, stream its output to out; its exit status (124 on timeout)."""
    image, release = kernel_image()
    initramfs = build_initramfs(release)
    if shutil.which("qemu-system-x86_64") is None:
        raise VMError("qemu is missing: apt-get install qemu-system-x86")
    with tempfile.TemporaryDirectory(prefix="netkit-vmtest-") as tmp:
        iodir = Path(tmp)
        (iodir / "command.sh").write_text(command_script(argv, cwd))
        proc = subprocess.Popen(qemu_command(image, initramfs, iodir, accel),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        started = time.monotonic()
        deadline = started + timeout
        pending = b""

        def relay(line: bytes) -> None:
            text = line.decode(errors="replace")
            if text == GUEST_UP:
                boot_s[0] = time.monotonic() - started
            elif text != GUEST_DONE and not POWER_DOWN.match(text):
                out.write(text + "\n")
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                chunk = os.read(fd, 65536) if ready else b""
                if ready and not chunk:                 # qemu closed its end: it is done
                    break
                pending += chunk.replace(b"\r", b"")
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    relay(line)
                out.flush()
            if pending:
                relay(pending)
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                out.write(f"vmtest: timed out after {timeout:.0f} s\n")
                return 124
        status = iodir / "status"
        if not status.exists():
            out.write("vmtest: the guest ended without an exit status (see its console above)\n")
            return 125
        return int(status.read_text().strip() or 125)


def pick_accel(requested: str) -> str:
    """kvm when asked, or on auto when a KVM guest reaches its init within 15 s; else tcg.
    The answer is kept in CACHE for the session's later boots."""
    if requested != "auto":
        return requested
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    known = CACHE / "accel"
    if known.exists():
        return known.read_text().strip()
    CACHE.mkdir(parents=True, exist_ok=True)

    class Sink:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    sink = Sink()
    try:
        rc = boot(["true"], accel="kvm", timeout=15, cwd=Path("/"), out=sink)
    except OSError:
        rc = 1
    accel = "kvm" if rc == 0 else "tcg"
    known.write_text(accel)
    return accel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.vmtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--timeout", type=float, default=600)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="run a command in the guest")
    run.add_argument("command", nargs=argparse.REMAINDER)
    pyt = sub.add_parser("pytest", help="run the vm test subset in the guest")
    pyt.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("info", help="kernel, initramfs and accelerator")
    args, extra = parser.parse_known_args(argv)
    if extra and args.what != "pytest":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.what == "info":
            image, release = kernel_image()
            print(f"kernel {image}\ninitramfs {build_initramfs(release)}\n"
                  f"accel {pick_accel(args.accel)}")
            return 0
        if args.what == "run":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not command:
                parser.error("run needs a command after --")
        else:
            command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-p",
                       "no:cacheprovider", "-m", "vm", *args.args, *extra]
        accel = pick_accel(args.accel)
        started = time.monotonic()
        rc = boot(command, accel=accel, timeout=args.timeout, cwd=Path.cwd())
        sys.stdout.flush()
        print(f"vmtest: {accel} guest booted in {boot_s[0]:.0f} s; exit status {rc} after "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
        return rc
    except VMError as e:
        print(f"vmtest: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
