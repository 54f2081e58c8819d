"""Boot a throwaway VM under qemu and run pgwarden's watchdog code against the real `softdog`.

Neither the host kernel nor the lab has a real watchdog (ENVIRONMENT.md), so this is the only
place pgwarden's ioctls meet a kernel driver. The VM is as small as a VM can be:

* Debian's stock kernel (`linux-image-amd64`), booted directly by qemu (`-kernel`), software
  emulation only (`-accel tcg`: KVM hangs on these machines), one vCPU, no network (`-nic none`).
* An initramfs written here (a gzipped newc cpio, no `cpio` binary needed) that holds a static
  busybox, the few kernel modules needed (virtio PCI, 9p, softdog, each with its dependencies from
  modules.dep) and a shell /init. The init loads them, mounts the host's / READ-ONLY over virtio-9p
  (and qemu exports it read-only too), chroots into it and runs the scenario script with the host's
  own Python, so the code under test is the working tree, unchanged.
* The guest reports on the serial console with `PGW:<tag> {json}` lines; the host stamps every
  line on arrival with its own monotonic clock. Feeds are also written to /dev/kmsg so that the
  kernel's own timestamp of "softdog: Initiating system reboot" can be compared with the last feed
  on a single guest clock.
* A reset is observed, not guessed: with `-no-reboot`, qemu turns a guest reset into its exit and
  announces it on QMP as `SHUTDOWN` with reason `guest-reset` (a clean `poweroff -f` is
  `guest-shutdown`); the host notes the event's arrival on its monotonic clock.

Booting the bzImage as is costs TCG most of its time before the kernel's first line;
`fast_kernel()` unpacks the vmlinux once on the host and qemu enters it through PVH instead.

Everything started is cleaned up on every path: qemu is killed by its pid (and dies with us via
PR_SET_PDEATHSIG should this process be killed outright), the temp dir is removed (and the dirs
of a SIGKILLed run, named after its dead pid, by the next run). `python -m
pgwarden.lab.qemu_watchdog` runs both scenarios and prints the timings.
"""
from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import lzma
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("qemu-system-x86", "linux-image-amd64", "busybox-static")
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
# What the guest must load: the PCI transport of virtio, the 9p filesystem over it, softdog.
# modules.dep adds the rest (virtio, virtio_ring, 9pnet, netfs, fscache, watchdog).
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "softdog")
MOUNT_TAG = "hostroot"
TMP_PREFIX = "pgwarden-qemu-"
APT_TIMEOUT = 900.0
QMP_CONNECT_TIMEOUT = 15.0
MARKER = "PGW:"
MARKER_RE = re.compile(r"PGW:([\w-]+) (\{.*\})")
PRINTK_RE = re.compile(r"\[\s*(\d+\.\d+)\]\s?(.*)")
SOFTDOG_FIRED = "softdog: Initiating system reboot"
KERNEL_PANIC = "Kernel panic"
# quiet: the boot log is slow to push through an emulated UART and says nothing we need.
# printk.devkmsg=on: /dev/kmsg would otherwise rate-limit the guest's feed markers.
# panic=-1: a guest panic ends the run at once instead of at the host timeout (seen as a reset,
# told apart from the watchdog by the console: see BootResult.reset_cause).
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 printk.devkmsg=on rdinit=/init"
_PR_SET_PDEATHSIG = 1
_PT_INTERP = 3
_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"


class QemuUnavailable(RuntimeError):
    """This machine cannot boot the lab VM; the message says why and what to do."""


class QemuBootError(RuntimeError):
    """qemu was there but did not start as asked: a bug here, never a reason to skip."""


# -- installing ------------------------------------------------------------------------------


def missing_packages(packages: Iterable[str] = PACKAGES) -> list[str]:
    missing = []
    for pkg in packages:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                             check=False, capture_output=True, text=True, timeout=30)
        if out.returncode != 0 or "install ok installed" not in out.stdout:
            missing.append(pkg)
    return missing


def ensure_installed(packages: Sequence[str] = PACKAGES, timeout: float = APT_TIMEOUT) -> list[str]:
    """Install the missing Debian packages; return the ones installed. QemuUnavailable if not."""
    if not _has_apt():
        raise QemuUnavailable("this is not a Debian system (no dpkg-query/apt-get): install "
                              f"{', '.join(packages)} by hand")
    missing = missing_packages(packages)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise QemuUnavailable(f"{', '.join(missing)} not installed and installing needs root: "
                              f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # the lock timeout: another session may be running apt on this shared machine
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q",
           "--no-install-recommends", *missing]
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                             env=env)
    except subprocess.TimeoutExpired:
        raise QemuUnavailable(f"apt-get install {' '.join(missing)} took over "
                              f"{timeout:.0f} s") from None
    if out.returncode != 0:
        tail = (out.stderr.strip() or out.stdout.strip())[-1500:]
        raise QemuUnavailable(f"apt-get install {' '.join(missing)} failed: {tail}")
    still = missing_packages(missing)
    if still:
        raise QemuUnavailable(f"apt-get reported success but {', '.join(still)} is not installed")
    return missing


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path
    modules: Path  # /lib/modules/<version>


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", version)]


def find_kernel() -> Kernel:
    """The newest Debian kernel with both an image in /boot and its modules installed."""
    found = []
    for image in BOOT_DIR.glob("vmlinuz-*"):
        version = image.name[len("vmlinuz-"):]
        modules = MODULES_ROOT / version
        if (modules / "modules.dep").is_file():
            found.append(Kernel(version, image, modules))
    if not found:
        raise QemuUnavailable(f"no kernel in {BOOT_DIR} with modules in {MODULES_ROOT}: "
                              "apt-get install linux-image-amd64")
    return max(found, key=lambda k: _version_key(k.version))


def check_runnable() -> Kernel:
    """Everything a boot needs, or QemuUnavailable with the reason. Installs nothing."""
    if shutil.which(QEMU) is None:
        raise QemuUnavailable(f"{QEMU} not found: apt-get install qemu-system-x86")
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        raise QemuUnavailable(f"{BUSYBOX} is missing or not static: apt-get install busybox-static")
    kernel = find_kernel()
    if not os.access(kernel.image, os.R_OK):
        raise QemuUnavailable(f"cannot read {kernel.image} (run as root)")
    module_load_order(kernel.modules, GUEST_MODULES)  # raises if one is missing
    return kernel


def prepare(install: bool = True) -> Kernel:
    """Install what is missing (when allowed), then check; QemuUnavailable if it cannot boot."""
    if install and _has_apt():
        ensure_installed()
    # without apt (another distribution) the check says what to install by hand
    return check_runnable()


def _has_apt() -> bool:
    return shutil.which("dpkg-query") is not None and shutil.which("apt-get") is not None


@contextlib.contextmanager
def fast_kernel(kernel: Kernel) -> Iterator[Kernel]:
    """`kernel`, unpacked for qemu's PVH entry when possible, in a temp dir removed on exit.

    TCG spends most of a bzImage boot before the kernel's first line: real-mode setup and
    xz-decompressing 66 MB one emulated instruction at a time. Decompressed once on the host
    (a few seconds) and entered through PVH, the same kernel boots ~4-10 s sooner; sharing it
    between boots pays the unpacking once.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    try:
        yield unpack_for_pvh(kernel, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_for_pvh(kernel: Kernel, dest: Path) -> Kernel:
    """The bzImage's vmlinux in `dest` if it has a PVH entry; else `kernel` unchanged."""
    data = kernel.image.read_bytes()
    vmlinux: bytes | None = None
    for magic, unpack in ((_XZ_MAGIC, _unxz), (_GZIP_MAGIC, _gunzip)):
        at = data.find(magic)
        if at >= 0:
            try:
                vmlinux = unpack(data[at:])
            except (lzma.LZMAError, OSError, EOFError, zlib.error):
                continue
            break
    if vmlinux is None or not _has_pvh_entry(vmlinux):
        return kernel
    image = dest / f"vmlinux-{kernel.version}"
    image.write_bytes(vmlinux)
    return Kernel(kernel.version, image, kernel.modules)


def _unxz(data: bytes) -> bytes:
    # a decompressor object stops at the end of the stream; the bzImage goes on after it
    return lzma.LZMADecompressor().decompress(data)


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _has_pvh_entry(elf: bytes) -> bool:
    """An ELF64 note "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY: qemu can enter it directly."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != _PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == b"Xen\0" and n_type == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + _align4(namesz) + _align4(descsz)
    return False


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _is_static_elf(path: Path) -> bool:
    """No PT_INTERP program header: a dynamic busybox would need the host's libc in the cpio."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELF64 only (x86_64)
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP
               for i in range(phnum))


# -- the initramfs ---------------------------------------------------------------------------


def module_load_order(moddir: Path, wanted: Iterable[str]) -> list[Path]:
    """The .ko files to insmod, dependencies first, from modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        by_name[_module_name(mod)] = mod
    order: list[str] = []

    def visit(mod: str, trail: tuple[str, ...]) -> None:
        if mod in order:
            return
        if mod in trail:
            raise QemuUnavailable(f"module dependency cycle in {moddir}: {' -> '.join(trail)}")
        for dep in deps.get(mod, []):
            visit(dep, trail + (mod,))
        order.append(mod)

    for name in wanted:
        found = by_name.get(_module_name(name))
        if found is None:
            raise QemuUnavailable(f"kernel module {name} is not in {moddir}/modules.dep "
                                  "(built in? then drop it from GUEST_MODULES)")
        visit(found, ())
    return [moddir / mod for mod in order]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.\w+)?$", "", base)
    return base.replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    # busybox insmod takes plain ELF only; Debian 12 ships plain .ko, later releases .ko.xz
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise QemuUnavailable(f"cannot unpack {path}: only .ko, .ko.xz and .ko.gz are handled")


class Cpio:
    """A newc ("070701") archive, the format the kernel unpacks into its rootfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self._parts.append(header + b"\0" * (-len(header) % 4))
        self._parts.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def init_script(modules: Sequence[str], python: str, script: str,
                env: dict[str, str]) -> str:
    """The guest's /init. Whatever happens, it ends in `poweroff -f`: only softdog resets."""
    exports = " ".join(f"{k}={_sh_quote(v)}" for k, v in sorted(env.items()))
    return textwrap.dedent(f"""\
        #!/bin/sh
        export PATH=/bin
        /bin/busybox --install -s /bin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev
        say() {{ echo "{MARKER}$1 {{$2}}"; }}
        fatal() {{ say fatal "\\"reason\\": \\"$1\\""; poweroff -f; sleep 60; }}
        say init "\\"uptime\\": $(cut -d' ' -f1 /proc/uptime)"
        for m in {' '.join(modules)}; do
            insmod /modules/$m || fatal "insmod $m"
        done
        mkdir -p /host
        mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 \\
            {MOUNT_TAG} /host || fatal "mount 9p"
        mount -t proc proc /host/proc || fatal "mount proc"
        mount -t sysfs sysfs /host/sys || fatal "mount sysfs"
        mount -t devtmpfs devtmpfs /host/dev || fatal "mount devtmpfs"
        say scenario-start "\\"uptime\\": $(cut -d' ' -f1 /proc/uptime)"
        chroot /host /usr/bin/env -i {exports} {_sh_quote(python)} -u {_sh_quote(script)}
        say scenario-exit "\\"rc\\": $?"
        poweroff -f
        sleep 60
        """)


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def build_initramfs(dest: Path, kernel: Kernel, python: str, script: str,
                    env: dict[str, str]) -> Path:
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "modules", "tmp"):
        archive.directory(d)
    # the kernel opens /dev/console for init's stdio before anything is mounted
    archive.chardev("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    names = []
    for path in module_load_order(kernel.modules, GUEST_MODULES):
        name = _module_name(path.name) + ".ko"
        archive.file(f"modules/{name}", _module_bytes(path))
        names.append(name)
    archive.file("init", init_script(names, python, script, env).encode(), 0o755)
    out = dest / "initramfs.cpio.gz"
    out.write_bytes(gzip.compress(archive.finish(), compresslevel=1))
    return out


# -- booting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleLine:
    t: float  # host monotonic seconds since qemu was started
    text: str


@dataclass(frozen=True)
class Marker:
    t: float  # host arrival, as ConsoleLine.t
    tag: str
    fields: dict[str, Any]


@dataclass
class BootResult:
    console: list[ConsoleLine]
    shutdown_reason: str | None  # QMP SHUTDOWN reason: guest-reset, guest-shutdown, ...
    shutdown_t: float | None  # host arrival of that event, as ConsoleLine.t
    timed_out: bool
    returncode: int | None
    wall: float  # qemu start to exit, host seconds
    stderr: str = ""
    qmp_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reset(self) -> bool:
        """The guest reset itself (with -no-reboot, qemu exits instead of rebooting)."""
        return self.shutdown_reason == "guest-reset"

    @property
    def reset_cause(self) -> str | None:
        if not self.reset:
            return None
        if self.kernel_line(SOFTDOG_FIRED) is not None:
            return "softdog"
        if any(KERNEL_PANIC in line.text for line in self.console):
            return "panic"
        return "unknown"

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.console)

    def markers(self, tag: str | None = None) -> list[Marker]:
        found = []
        for line in self.console:
            m = MARKER_RE.search(line.text)
            if m and (tag is None or m.group(1) == tag):
                try:
                    fields = json.loads(m.group(2))
                except ValueError:
                    continue  # a kernel message cut into the line: the guest repeats nothing
                found.append(Marker(line.t, m.group(1), fields))
        return found

    def marker(self, tag: str) -> Marker | None:
        found = self.markers(tag)
        return found[-1] if found else None

    def kernel_line(self, needle: str, exact: bool = False) -> tuple[float, ConsoleLine] | None:
        """(guest printk seconds, line) of the last kernel message containing `needle`
        (`exact`: being `needle`, so "feed 1" is not found in "feed 10")."""
        hit = None
        for line in self.console:
            if needle in line.text:
                m = PRINTK_RE.search(line.text)
                if m and (not exact or m.group(2).strip() == needle):
                    hit = (float(m.group(1)), line)
        return hit

    def boot_seconds(self) -> float | None:
        """Host seconds from qemu's start to the scenario starting in the guest."""
        start = self.marker("scenario-start")
        return start.t if start else None

    def diagnostics(self) -> str:
        return (f"reason={self.shutdown_reason} timed_out={self.timed_out} rc={self.returncode} "
                f"wall={self.wall:.1f}s\n--- console ---\n{self.text}\n--- qemu stderr ---\n"
                f"{self.stderr}")


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child


def _die_with_parent() -> None:
    # qemu must not outlive a test runner that is SIGKILLed (nothing else would reap it)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def qemu_command(kernel: Kernel, initramfs: Path, qmp_path: Path, memory_mb: int) -> list[str]:
    return [
        QEMU, "-accel", "tcg", "-machine", "pc", "-smp", "1", "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
        "-no-reboot",  # a guest reset ends qemu: that is how the watchdog's reset is seen
        "-kernel", str(kernel.image), "-initrd", str(initramfs), "-append", KERNEL_CMDLINE,
        "-serial", "stdio", "-monitor", "none",
        # wait=on: the guest does not start before we listen, so no event is missed
        "-qmp", f"unix:{qmp_path},server=on,wait=on",
        "-virtfs", (f"local,path=/,mount_tag={MOUNT_TAG},security_model=none,readonly=on,"
                    "multidevs=remap"),
    ]


class _Console(threading.Thread):
    def __init__(self, fd: int, t0: float) -> None:
        super().__init__(name="qemu-console", daemon=True)
        self._fd, self._t0 = fd, t0
        self.lines: list[ConsoleLine] = []

    def run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic() - self._t0
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self.lines.append(ConsoleLine(now, raw.decode("utf-8", "replace").rstrip("\r")))
        if pending:
            self.lines.append(ConsoleLine(time.monotonic() - self._t0,
                                          pending.decode("utf-8", "replace").rstrip("\r")))


class _Qmp(threading.Thread):
    """Reads QMP events until qemu closes the socket; notes SHUTDOWN on our clock."""

    def __init__(self, sock: socket.socket, t0: float) -> None:
        super().__init__(name="qemu-qmp", daemon=True)
        self._sock, self._t0 = sock, t0
        self.events: list[dict[str, Any]] = []
        self.shutdown: tuple[float, str] | None = None

    def run(self) -> None:
        reader = self._sock.makefile("rb")
        try:
            for raw in reader:
                now = time.monotonic() - self._t0
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if "event" in msg:
                    msg["host_t"] = now
                    self.events.append(msg)
                    if msg["event"] == "SHUTDOWN" and self.shutdown is None:
                        self.shutdown = (now, str(msg.get("data", {}).get("reason")))
        except OSError:
            pass
        finally:
            reader.close()


def _connect_qmp(path: Path, proc: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    while True:
        if proc.poll() is not None:
            raise QemuBootError(f"qemu exited at start (rc {proc.returncode})")
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise QemuBootError(f"qemu's QMP socket {path} never answered") from None
            time.sleep(0.05)
    try:
        _negotiate_qmp(sock)
    except (OSError, ValueError) as e:
        sock.close()
        raise QemuBootError(f"QMP handshake failed: {e}") from None
    except QemuBootError:
        sock.close()
        raise
    return sock


def _negotiate_qmp(sock: socket.socket) -> None:
    sock.settimeout(QMP_CONNECT_TIMEOUT)
    reader = sock.makefile("rb")
    try:
        greeting = json.loads(reader.readline())
        if "QMP" not in greeting:
            raise QemuBootError(f"unexpected QMP greeting: {greeting}")
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        while True:  # events cannot come yet (the guest waits for us), but be exact anyway
            reply = json.loads(reader.readline())
            if "return" in reply or "error" in reply:
                break
        if "error" in reply:
            raise QemuBootError(f"QMP refused qmp_capabilities: {reply['error']}")
    finally:
        reader.close()
    sock.settimeout(None)


def default_guest_python() -> str:
    # the interpreter running this module imports pgwarden, so the same one in the chroot does
    return sys.executable


def run_scenario(script: str, timeout: float, *, kernel: Kernel | None = None,
                 python: str | None = None, memory_mb: int = 512) -> BootResult:
    """Boot the VM, run `script` (Python source) as root in the chroot, and wait for qemu to end.

    Ends when the guest powers off or resets, or after `timeout` host seconds (qemu killed,
    `timed_out` set). QemuUnavailable: nothing to boot (see prepare); QemuBootError: qemu
    did not start as asked (its stderr is in the message).
    """
    kernel = kernel or check_runnable()
    python = python or default_guest_python()
    _sweep_stale_dirs()
    # under /tmp on the host's /, so the guest sees the script at the same path through 9p
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    console: _Console | None = None
    qmp: _Qmp | None = None
    timed_out = False
    wall = 0.0
    boot_error: QemuBootError | None = None
    t0 = time.monotonic()
    try:
        tmp.chmod(0o755)
        scenario = tmp / "scenario.py"
        scenario.write_text(script)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8",
               # the export is read-only: no bytecode to write
               "PYTHONDONTWRITEBYTECODE": "1"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        initramfs = build_initramfs(tmp, kernel, python, str(scenario), env)
        qmp_path = tmp / "qmp.sock"
        with open(tmp / "qemu.stderr", "wb") as stderr:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                qemu_command(kernel, initramfs, qmp_path, memory_mb),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                # it only calls prctl(), async-signal-safe, so other threads are no danger
                preexec_fn=_die_with_parent)  # noqa: PLW1509
        assert proc.stdout is not None
        console = _Console(proc.stdout.fileno(), t0)
        console.start()
        try:
            sock = _connect_qmp(qmp_path, proc, t0 + QMP_CONNECT_TIMEOUT)
        except QemuBootError as e:
            boot_error = e
        else:
            qmp = _Qmp(sock, t0)
            qmp.start()
            try:
                proc.wait(timeout=max(0.0, t0 + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        wall = time.monotonic() - t0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()  # by pid: only the qemu started above
        if proc is not None:
            proc.wait()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in (console, qmp):
            if thread is not None:
                thread.join(timeout=5)
        if sock is not None:
            sock.close()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        qemu_stderr = _read_quietly(tmp / "qemu.stderr")
        shutil.rmtree(tmp, ignore_errors=True)
    if boot_error is not None:
        raise QemuBootError(f"{boot_error}; qemu said: {qemu_stderr.strip()[-1500:]}")
    assert console is not None and qmp is not None and proc is not None
    shutdown_t, reason = qmp.shutdown if qmp.shutdown else (None, None)
    return BootResult(console=console.lines, shutdown_reason=reason, shutdown_t=shutdown_t,
                      timed_out=timed_out, returncode=proc.returncode, wall=wall,
                      stderr=qemu_stderr, qmp_events=qmp.events)


def _sweep_stale_dirs() -> None:
    """Remove temp dirs of runs that were SIGKILLed (no `finally` ran): their owner pid is gone.

    A live owner (or a recycled pid) keeps its dir: only the dead-owner case is ever removed.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        owner = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # a zombie is dead already; PID 1 here is slow to reap the killed
    return stat_line.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _read_quietly(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# -- the scenarios (guest side: pgwarden's own device code, real ioctls) ---------------------

GUEST_PRELUDE = '''\
import json, os, sys, time
from pgwarden.fencing import linux_abi as abi
from pgwarden.fencing.device import LinuxWatchdog, WatchdogError

DEVICE = "/dev/watchdog"


def say(tag, **fields):
    fields["mono"] = round(time.monotonic(), 6)
    # one write per line, led by a newline: a kernel message may have left a partial line
    sys.stdout.write("\\nPGW:%s %s\\n" % (tag, json.dumps(fields, sort_keys=True)))
    sys.stdout.flush()


def kmsg(text):
    # level 2 (crit) shows on the console despite `quiet`, stamped by the kernel's clock:
    # the same clock as softdog's "Initiating system reboot"
    with open("/dev/kmsg", "w") as f:
        f.write("<2>pgwarden-scenario: %s\\n" % text)


def sysfs_state():
    # the kernel's own view of the timer (softdog's module parameters are not in sysfs)
    base = "/sys/class/watchdog/watchdog0"
    found = {}
    for name in ("identity", "state", "timeout", "nowayout"):
        try:
            with open(os.path.join(base, name)) as f:
                found[name] = f.read().strip()
        except OSError:
            pass
    return found


def open_and_set(timeout):
    dev = LinuxWatchdog(DEVICE)
    dev.open()
    effective = dev.set_timeout(timeout)
    info = dev.info
    say("setup", requested=timeout, effective=effective, read_back=dev.get_timeout(),
        timeleft=dev.get_timeleft(), identity=info.identity, options=info.options,
        option_names=info.option_names(), firmware_version=info.firmware_version,
        nowayout=dev.nowayout, can_disarm=dev.can_disarm, kind=dev.kind,
        sysfs=sysfs_state())
    return dev


def feed(dev, n):
    dev.keepalive()
    kmsg("feed %d" % n)
    say("feed", n=n)
'''


def scenario_fed_then_disarmed(timeout: int = 3, fed_for: float = 8.0, interval: float = 1.0,
                               after_close: float | None = None) -> str:
    """(a) set and read back the timeout, GETSUPPORT, a second open; (b) keep it fed, magic
    close, stay up `after_close` seconds, exit (the init then powers off)."""
    after = after_close if after_close is not None else timeout + 4.0
    return GUEST_PRELUDE + textwrap.dedent(f'''
        dev = open_and_set({timeout})
        try:  # the kernel allows one opener: a second agent must get a sentence, not arm twice
            LinuxWatchdog(DEVICE).open()
            say("second-open", error=None)
        except WatchdogError as e:
            say("second-open", error=str(e))
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < {fed_for}:
            n += 1
            feed(dev, n)
            time.sleep({interval})
        disarmed = dev.close()
        closed = time.monotonic()
        kmsg("magic close")
        say("closed", disarmed=disarmed, feeds=n, sysfs=sysfs_state())
        time.sleep({after})
        say("alive-after-close", seconds=round(time.monotonic() - closed, 3))
        ''')


def scenario_hung_feeder(timeout: int = 3, feeds: int = 3, interval: float = 1.0) -> str:
    """(c) feed a few times, then hang with the device open: the kernel must reset us."""
    return GUEST_PRELUDE + textwrap.dedent(f'''
        dev = open_and_set({timeout})
        for n in range(1, {feeds} + 1):
            if n > 1:
                time.sleep({interval})
            feed(dev, n)
        say("hung", feeds={feeds})
        while True:  # a frozen agent: the fd stays open, nobody writes
            time.sleep(3600)
        ''')


@dataclass(frozen=True)
class ResetTiming:
    host: float  # host: QMP SHUTDOWN arrival - arrival of the last feed's console line
    guest: float | None  # guest printk clock: softdog's reboot message - the last feed's kmsg


def reset_after_last_feed(result: BootResult) -> ResetTiming | None:
    feeds = result.markers("feed")
    if not feeds or not result.reset or result.shutdown_t is None:
        return None
    last = feeds[-1]
    fired = result.kernel_line(SOFTDOG_FIRED)
    fed = result.kernel_line(f"pgwarden-scenario: feed {last.fields['n']}", exact=True)
    guest = fired[0] - fed[0] if fired and fed else None
    return ResetTiming(host=result.shutdown_t - last.t, guest=guest)


def main() -> int:
    """Run both boots and print what was measured (used for docs/fencing.md)."""
    with fast_kernel(prepare()) as kernel:
        return _measure(kernel)


def _measure(kernel: Kernel) -> int:
    print(f"kernel {kernel.version} ({kernel.image.name}), {QEMU}, TCG")
    fed = run_scenario(scenario_fed_then_disarmed(), timeout=120, kernel=kernel)
    print("boot 1 (fed, then magic close):", _summary(fed))
    for tag in ("setup", "second-open", "closed", "alive-after-close"):
        found = fed.marker(tag)
        print(f"  {tag}: {found.fields if found else None}")
    hung = run_scenario(scenario_hung_feeder(), timeout=120, kernel=kernel)
    print("boot 2 (hung feeder):", _summary(hung))
    timing = reset_after_last_feed(hung)
    if timing is None:
        print("  no watchdog reset was seen\n" + hung.diagnostics())
        return 1
    guest = "?" if timing.guest is None else f"{timing.guest:.3f}"
    print(f"  reset {timing.host:.3f} s after the last feed (host clock), {guest} s (guest printk)")
    return 0


def _summary(result: BootResult) -> str:
    def at(tag: str) -> str:
        found = result.marker(tag)
        return "-" if found is None else f"{found.t:.1f}"

    return (f"init at {at('init')} s, scenario at {at('scenario-start')} s, end "
            f"{result.shutdown_reason} ({result.reset_cause or 'no reset'}) at "
            f"{result.wall:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
