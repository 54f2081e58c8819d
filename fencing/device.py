"""Watchdog devices: the Linux driver interface, the test emulator's FIFO, and a null device.

Opening a Linux watchdog arms it; any write pings it; writing 'V' and then closing disarms
it, but only when the driver supports WDIOF_MAGICCLOSE (and was not loaded with nowayout).
Closing without 'V' leaves the timer running: the machine resets when it expires. That is
the fence (ARCHITECTURE.md rule 3), so `abandon()` exists for exactly that exit.

A FIFO at the device path is the lab's emulator (fencing/emulator.py). It cannot answer
ioctls (ENOTTY), so it is driven by a text protocol written into the same pipe:
`T<seconds>\\n` sets the timeout (and pings, as the kernel's SETTIMEOUT does), 'V' arms the
magic close, any other byte pings. The emulator reports nothing back: the timeout set is
the effective one.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pgwarden.core.errors import PgwardenError
from pgwarden.fencing import linux_abi as abi

IoctlFn = Callable[[int, int, bytearray, bool], Any]  # the shape of fcntl.ioctl
OpenFn = Callable[[str, int], int]  # the shape of os.open

log = logging.getLogger("pgwarden.fencing")

KEEPALIVE_BYTE = b"1"  # Patroni writes "1"; the kernel treats any byte as a ping
MAGIC_BYTE = b"V"
FIFO_CONNECT_WAIT = 0.5  # the emulator reopens its FIFO between writers; ENXIO meanwhile
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)
SYSFS_WATCHDOG = "/sys/class/watchdog"
LEGACY_DEV = "10:130"  # /dev/watchdog, the misc alias of watchdog0


class WatchdogError(PgwardenError):
    """The watchdog device could not be opened or driven; the message says what to fix."""


class WatchdogDevice(ABC):
    path: str

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @property
    @abstractmethod
    def can_disarm(self) -> bool:
        """True if a magic close stops the timer (known only once open)."""

    @abstractmethod
    def open(self) -> None:
        """Open the device. On a real watchdog this ARMS it."""

    @abstractmethod
    def set_timeout(self, seconds: int) -> int | None:
        """Ask for `seconds`; return the effective timeout (None: the device does not say)."""

    @abstractmethod
    def get_timeout(self) -> int | None: ...

    @abstractmethod
    def keepalive(self) -> None: ...

    @abstractmethod
    def close(self) -> bool:
        """Magic close. True if the timer is stopped; False if it keeps running."""

    @abstractmethod
    def abandon(self) -> None:
        """Close WITHOUT the magic byte: the timer keeps running and will reset the host."""

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...


class NullWatchdog(WatchdogDevice):
    """Mode `off`: every call succeeds and nothing is armed."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._open = False
        self._timeout: int | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def can_disarm(self) -> bool:
        return True

    def open(self) -> None:
        self._open = True

    def set_timeout(self, seconds: int) -> int | None:
        self._timeout = seconds
        return seconds

    def get_timeout(self) -> int | None:
        return self._timeout

    def keepalive(self) -> None:
        pass

    def close(self) -> bool:
        self._open = False
        return True

    def abandon(self) -> None:
        self._open = False

    def describe(self) -> dict[str, Any]:
        return {"kind": "null", "path": self.path}


class LinuxWatchdog(WatchdogDevice):
    """/dev/watchdog (a character device driven by ioctls) or the emulator's FIFO."""

    def __init__(self, path: str, ioctl: IoctlFn = fcntl.ioctl, opener: OpenFn = os.open) -> None:
        self.path = path
        self._ioctl = ioctl
        self._opener = opener
        self._fd: int | None = None
        self.kind = "unknown"  # "linux" | "emulator" once open
        self.info: abi.WatchdogInfo | None = None
        self._fifo_timeout: int | None = None
        self.nowayout: bool | None = None  # the driver's nowayout, when sysfs tells

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def can_disarm(self) -> bool:
        return (self.info is not None and self.info.supports(abi.WDIOF_MAGICCLOSE)
                and self.nowayout is not True)

    # -- open ------------------------------------------------------------------------

    def open(self) -> None:
        if self._fd is not None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise WatchdogError(f"{self.path} does not exist: load a watchdog driver "
                                "(e.g. modprobe softdog) or set watchdog.mode: off") from None
        except OSError as e:
            raise WatchdogError(f"cannot stat {self.path}: {e.strerror}") from None
        if stat.S_ISFIFO(st.st_mode):
            self._fd = self._open_fifo()
            self.kind = "emulator"
            # the emulator honours every timeout and the magic close, like softdog
            self.info = abi.WatchdogInfo(
                abi.WDIOF_SETTIMEOUT | abi.WDIOF_MAGICCLOSE | abi.WDIOF_KEEPALIVEPING, 0,
                "pgwarden emulator")
            return
        if not stat.S_ISCHR(st.st_mode):
            raise WatchdogError(f"{self.path} is neither a watchdog device nor an emulator "
                                "FIFO: check watchdog.device")
        fd = self._open_chr()
        self._fd, self.kind = fd, "linux"
        self.nowayout = sysfs_nowayout(st.st_rdev)
        try:
            self.info = self._get_support(fd)
        except WatchdogError:
            # not a watchdog (GETSUPPORT unknown): nothing was armed, and writing 'V'
            # into some other device would be wrong
            self._fd = None
            os.close(fd)
            raise

    def _open_chr(self) -> int:
        try:
            return self._opener(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise WatchdogError(
                    f"{self.path} is busy: another process holds it open (a watchdog daemon, "
                    "or another pgwarden on this host); only one may feed it") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise WatchdogError(
                    f"no permission to open {self.path}: install the udev rule from etc/ "
                    "(group postgres, mode 0660) or start pgwarden as root") from None
            raise WatchdogError(f"cannot open {self.path}: {e.strerror}") from None

    def _open_fifo(self) -> int:
        # non-blocking: a plain open would hang until an emulator reads the FIFO
        deadline = time.monotonic() + FIFO_CONNECT_WAIT
        while True:
            try:
                return self._opener(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise WatchdogError(f"cannot open the emulator FIFO {self.path}: "
                                        f"{e.strerror}") from None
                if time.monotonic() >= deadline:
                    raise WatchdogError(f"no watchdog emulator is reading {self.path}") from None
                time.sleep(0.01)

    def _get_support(self, fd: int) -> abi.WatchdogInfo:
        buf = bytearray(abi.INFO_BYTES)
        try:
            self._ioctl(fd, abi.WDIOC_GETSUPPORT, buf, True)
        except OSError as e:
            raise WatchdogError(f"{self.path} is not a watchdog device (GETSUPPORT: "
                                f"{errno.errorcode.get(e.errno or 0, e.errno)})") from None
        return abi.parse_info(bytes(buf))

    # -- driving -----------------------------------------------------------------------

    def _require_fd(self) -> int:
        if self._fd is None:
            raise WatchdogError(f"{self.path} is not open")
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._require_fd()
        try:
            os.write(fd, data)
        except OSError as e:
            raise WatchdogError(f"writing to {self.path} failed: {e.strerror}") from None

    def _int_ioctl(self, request: int, value: int = 0) -> int | None:
        """An int ioctl; None when the driver does not implement it."""
        buf = abi.pack_int(value)
        try:
            self._ioctl(self._require_fd(), request, buf, True)
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                return None
            raise WatchdogError(f"{self.path}: ioctl {request:#x} failed: {e.strerror}") from None
        return abi.unpack_int(bytes(buf))

    def set_timeout(self, seconds: int) -> int | None:
        if self.kind == "emulator":
            self._write(b"T%d\n" % seconds)
            self._fifo_timeout = seconds
            return seconds
        if self.info is not None and self.info.supports(abi.WDIOF_SETTIMEOUT):
            written_back = self._int_ioctl(abi.WDIOC_SETTIMEOUT, seconds)
            # GETTIMEOUT is the authority (drivers clamp or round); SETTIMEOUT's own
            # write-back is the fallback for drivers that cannot report it
            effective = self.get_timeout()
            return effective if effective is not None else written_back
        return self.get_timeout()

    def get_timeout(self) -> int | None:
        if self.kind == "emulator":
            return self._fifo_timeout
        value = self._int_ioctl(abi.WDIOC_GETTIMEOUT)
        return value if value else None  # 0 means "unknown" in the kernel ABI

    def get_timeleft(self) -> int | None:
        """Seconds left; None where unsupported (softdog and i6300esb: EOPNOTSUPP)."""
        if self.kind == "emulator":
            return None
        return self._int_ioctl(abi.WDIOC_GETTIMELEFT)

    def keepalive(self) -> None:
        self._write(KEEPALIVE_BYTE)

    def close(self) -> bool:
        fd = self._fd
        if fd is None:
            return True
        disarms = self.can_disarm
        timeout = None if disarms else self._quiet_timeout()
        try:
            if not disarms:
                # as Patroni: one last ping, so the reset comes a full timeout from now
                os.write(fd, KEEPALIVE_BYTE)
            os.write(fd, MAGIC_BYTE)
        except OSError as e:
            log.error("writing the magic close to %s failed (%s): the watchdog stays armed",
                      self.path, e.strerror)
            disarms = False
        finally:
            self._fd = None
            os.close(fd)
        if not disarms:
            log.warning("%s was closed but stays armed (no magic close): the machine WILL "
                        "reset in %s s", self.path, timeout if timeout is not None else "its")
        return disarms

    def abandon(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _quiet_timeout(self) -> int | None:
        try:
            return self.get_timeout()
        except WatchdogError:
            return None

    def describe(self) -> dict[str, Any]:
        info = self.info
        d: dict[str, Any] = {"kind": self.kind, "path": self.path, "open": self.is_open}
        if info is not None:
            d.update(identity=info.identity, firmware_version=info.firmware_version,
                     options=info.option_names(), nowayout=self.nowayout,
                     can_disarm=self.can_disarm)
        if self.is_open:
            d["timeout"] = self.get_timeout()
            d["timeleft"] = self.get_timeleft()
        return d


def sysfs_nowayout(rdev: int) -> bool | None:
    """The driver's nowayout flag from /sys/class/watchdog (magic close is then ignored).

    The legacy node /dev/watchdog (misc 10:130) is watchdog0. None when not found.
    """
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    try:
        names = sorted(os.listdir(SYSFS_WATCHDOG))
    except OSError:
        return None
    for name in names:
        base = os.path.join(SYSFS_WATCHDOG, name)
        try:
            with open(os.path.join(base, "dev"), encoding="ascii") as f:
                dev = f.read().strip()
            if dev != want and not (want == LEGACY_DEV and name == "watchdog0"):
                continue
            with open(os.path.join(base, "nowayout"), encoding="ascii") as f:
                return f.read().strip() == "1"
        except OSError:
            continue
    return None


def make_device(mode: str, path: str, ioctl: IoctlFn = fcntl.ioctl) -> WatchdogDevice:
    return NullWatchdog(path) if mode == "off" else LinuxWatchdog(path, ioctl=ioctl)


def probe(path: str) -> str | None:
    """Whether `path` looks usable WITHOUT opening it (opening would arm it).

    None when usable, else the reason. As Patroni's `is_healthy`: exists and is writable.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as e:
        return f"cannot stat {path}: {e.strerror}"
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return f"{path} is neither a watchdog device nor an emulator FIFO"
    if not os.access(path, os.W_OK):
        return f"no permission to write {path}"
    return None
