"""The watchdog device layer against fake drivers (an injected ioctl) and real file types.

No /dev/watchdog here: a pty slave stands in for the character device (what we write
appears on the master side), and a real FIFO for the emulator's device node.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import stat
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgwarden.fencing import device as device_mod
from pgwarden.fencing import linux_abi as abi
from pgwarden.fencing.device import (
    LinuxWatchdog,
    NullWatchdog,
    WatchdogError,
    make_device,
    probe,
)

SOFTDOG_OPTIONS = abi.WDIOF_SETTIMEOUT | abi.WDIOF_MAGICCLOSE | abi.WDIOF_KEEPALIVEPING


class FakeDriver:
    """The kernel side of the ioctls, as softdog answers them, with knobs for other drivers."""

    def __init__(self, options: int = SOFTDOG_OPTIONS, identity: str = "Software Watchdog",
                 timeout: int = 60, min_timeout: int = 1, max_timeout: int = 65535,
                 reject_out_of_range: bool = False, gettimeout: bool = True,
                 settimeout_errno: int | None = None) -> None:
        self.options, self.identity, self.timeout = options, identity, timeout
        self.min_timeout, self.max_timeout = min_timeout, max_timeout
        self.reject_out_of_range = reject_out_of_range
        self.gettimeout = gettimeout
        self.settimeout_errno = settimeout_errno
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, fd: int, request: int, arg: bytearray, mutate: bool = True) -> int:
        value = abi.unpack_int(bytes(arg)) if len(arg) == abi.INT_BYTES else None
        self.calls.append((request, value))
        if request == abi.WDIOC_GETSUPPORT:
            arg[:] = abi.pack_info(abi.WatchdogInfo(self.options, 0, self.identity))
        elif request == abi.WDIOC_SETTIMEOUT:
            assert value is not None
            if self.settimeout_errno is not None:
                raise OSError(self.settimeout_errno, os.strerror(self.settimeout_errno))
            if not self.min_timeout <= value <= self.max_timeout and self.reject_out_of_range:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.timeout = min(max(value, self.min_timeout), self.max_timeout)
            arg[:] = abi.pack_int(self.timeout)
        elif request == abi.WDIOC_GETTIMEOUT:
            if not self.gettimeout:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            arg[:] = abi.pack_int(self.timeout)
        elif request == abi.WDIOC_GETTIMELEFT:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # softdog, i6300esb
        else:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        return 0

    def requests(self) -> list[int]:
        return [r for r, _ in self.calls]


@pytest.fixture
def chardev() -> Iterator[tuple[str, int]]:
    """(path of a character device we may open and write, fd to read what was written)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    assert stat.S_ISCHR(os.stat(path).st_mode)
    yield path, master
    os.close(slave)
    os.close(master)


def written(master: int) -> bytes:
    out = b""
    while select.select([master], [], [], 0.2)[0]:
        chunk = os.read(master, 1024)
        if not chunk:
            break
        out += chunk
    return out


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("W") << 8) | nr


def test_ioctl_numbers_are_the_x86_64_encoding() -> None:
    read, write = 2, 1
    assert abi.INFO_BYTES == 40 and abi.INT_BYTES == 4
    assert abi.WDIOC_GETSUPPORT == _ioc(read, 0, 40) == 0x80285700
    assert abi.WDIOC_GETSTATUS == _ioc(read, 1, 4) == 0x80045701
    assert abi.WDIOC_SETOPTIONS == _ioc(read, 4, 4) == 0x80045704
    assert abi.WDIOC_KEEPALIVE == _ioc(read, 5, 4) == 0x80045705
    assert abi.WDIOC_SETTIMEOUT == _ioc(read | write, 6, 4) == 0xC0045706
    assert abi.WDIOC_GETTIMEOUT == _ioc(read, 7, 4) == 0x80045707
    assert abi.WDIOC_GETTIMELEFT == _ioc(read, 10, 4) == 0x8004570A


def test_getsupport_is_parsed_from_the_40_byte_struct(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    driver = FakeDriver(options=SOFTDOG_OPTIONS, identity="Software Watchdog")
    wd = LinuxWatchdog(path, ioctl=driver)
    wd.open()
    assert driver.requests() == [abi.WDIOC_GETSUPPORT]
    assert wd.info == abi.WatchdogInfo(SOFTDOG_OPTIONS, 0, "Software Watchdog")
    assert wd.info.option_names() == ["SETTIMEOUT", "MAGICCLOSE", "KEEPALIVEPING"]
    assert wd.can_disarm
    raw = b"\x80\x81\x00\x00" + b"\x07\x00\x00\x00" + b"i6300ESB timer".ljust(32, b"\0")
    assert abi.parse_info(raw) == abi.WatchdogInfo(0x8180, 7, "i6300ESB timer")
    wd.close()


def test_settimeout_clamped_by_the_driver_reports_the_effective_timeout(
        chardev: tuple[str, int]) -> None:
    path, _ = chardev
    driver = FakeDriver(max_timeout=20)
    wd = LinuxWatchdog(path, ioctl=driver)
    wd.open()
    assert wd.set_timeout(25) == 20
    assert driver.calls[1:] == [(abi.WDIOC_SETTIMEOUT, 25), (abi.WDIOC_GETTIMEOUT, 0)]
    assert wd.get_timeout() == 20
    wd.close()


def test_settimeout_rejected_leaves_the_old_timeout_in_effect(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver(timeout=60, max_timeout=30,
                                              reject_out_of_range=True))
    wd.open()
    assert wd.set_timeout(45) == 60  # EINVAL: the caller sees 60 and must refuse it
    wd.close()


def test_without_settimeout_support_only_the_timeout_is_read(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    driver = FakeDriver(options=abi.WDIOF_MAGICCLOSE, timeout=30)
    wd = LinuxWatchdog(path, ioctl=driver)
    wd.open()
    assert wd.set_timeout(10) == 30
    assert abi.WDIOC_SETTIMEOUT not in driver.requests()
    wd.close()


def test_gettimeout_unsupported_falls_back_to_settimeouts_write_back(
        chardev: tuple[str, int]) -> None:
    path, _ = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver(gettimeout=False, min_timeout=5))
    wd.open()
    assert wd.set_timeout(2) == 5
    assert wd.get_timeout() is None
    wd.close()


def test_settimeout_ebusy_is_an_error_not_an_unsupported_call(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver(settimeout_errno=errno.EBUSY))
    wd.open()
    with pytest.raises(WatchdogError, match="ioctl 0xc0045706 failed"):
        wd.set_timeout(10)
    wd.close()


def test_gettimeleft_eopnotsupp_means_unknown(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver())
    wd.open()
    assert wd.get_timeleft() is None
    d = wd.describe()
    assert d["timeleft"] is None and d["timeout"] == 60 and d["kind"] == "linux"
    assert d["identity"] == "Software Watchdog" and d["can_disarm"] is True
    wd.close()


def test_keepalive_is_a_one_byte_write_and_magic_close_writes_v(
        chardev: tuple[str, int]) -> None:
    path, master = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver())
    wd.open()
    wd.keepalive()
    wd.keepalive()
    assert wd.close() is True
    assert written(master) == b"11V"
    assert not wd.is_open


def test_close_without_magic_close_support_warns_that_the_host_will_reset(
        chardev: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    path, master = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver(options=abi.WDIOF_SETTIMEOUT, timeout=15))
    wd.open()
    assert not wd.can_disarm
    with caplog.at_level(logging.WARNING, logger="pgwarden.fencing"):
        assert wd.close() is False
    assert "WILL reset in 15 s" in caplog.text
    assert written(master) == b"1V"  # Patroni's last ping, then the (ignored) magic byte


def test_abandon_closes_without_the_magic_byte(chardev: tuple[str, int]) -> None:
    path, master = chardev
    wd = LinuxWatchdog(path, ioctl=FakeDriver())
    wd.open()
    wd.keepalive()
    wd.abandon()
    assert written(master) == b"1"
    assert not wd.is_open


def test_nowayout_from_sysfs_means_it_cannot_be_disarmed(
        chardev: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = chardev
    rdev = os.stat(path).st_rdev
    node = tmp_path / "watchdog1"
    node.mkdir()
    (node / "dev").write_text(f"{os.major(rdev)}:{os.minor(rdev)}\n")
    (node / "nowayout").write_text("1\n")
    monkeypatch.setattr(device_mod, "SYSFS_WATCHDOG", str(tmp_path))
    wd = LinuxWatchdog(path, ioctl=FakeDriver())
    wd.open()
    assert wd.nowayout is True and not wd.can_disarm
    wd.abandon()


def test_a_character_device_that_is_not_a_watchdog_answers_enotty(
        chardev: tuple[str, int]) -> None:
    path, master = chardev
    wd = LinuxWatchdog(path)  # the real fcntl.ioctl: a tty does not know WDIOC_GETSUPPORT
    with pytest.raises(WatchdogError, match="not a watchdog device.*ENOTTY"):
        wd.open()
    assert not wd.is_open
    assert written(master) == b""  # no 'V' sprayed into someone else's device


def test_ebusy_on_open_names_the_likely_culprit() -> None:
    def busy(path: str, flags: int) -> int:
        raise OSError(errno.EBUSY, "Device or resource busy")

    wd = LinuxWatchdog("/dev/null", ioctl=FakeDriver(), opener=busy)
    with pytest.raises(WatchdogError, match="busy.*another process"):
        wd.open()


def test_eacces_on_open_points_at_the_udev_rule() -> None:
    def denied(path: str, flags: int) -> int:
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(WatchdogError, match="udev rule"):
        LinuxWatchdog("/dev/null", opener=denied).open()


def test_open_uses_write_only_and_close_on_exec(chardev: tuple[str, int]) -> None:
    path, _ = chardev
    seen: list[int] = []

    def opener(p: str, flags: int) -> int:
        seen.append(flags)
        return os.open(p, flags)

    wd = LinuxWatchdog(path, ioctl=FakeDriver(), opener=opener)
    wd.open()
    assert seen == [os.O_WRONLY | os.O_CLOEXEC]
    wd.close()


def test_a_missing_device_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match="does not exist.*softdog.*mode: off"):
        LinuxWatchdog(str(tmp_path / "watchdog")).open()


def test_a_regular_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    f = tmp_path / "watchdog"
    f.write_bytes(b"")
    with pytest.raises(WatchdogError, match="neither a watchdog device nor"):
        LinuxWatchdog(str(f), ioctl=FakeDriver()).open()
    assert f.read_bytes() == b""


# -- the emulator's FIFO ------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[str, int]]:
    path = str(tmp_path / "watchdog")
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def test_a_fifo_rejects_watchdog_ioctls_with_enotty(fifo: tuple[str, int]) -> None:
    path, _ = fifo
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, abi.WDIOC_GETSUPPORT, bytearray(abi.INFO_BYTES), True)
        assert e.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


def test_a_fifo_is_driven_by_the_text_protocol_without_ioctls(fifo: tuple[str, int]) -> None:
    path, reader = fifo
    driver = FakeDriver()
    wd = LinuxWatchdog(path, ioctl=driver)
    wd.open()
    assert wd.kind == "emulator" and wd.can_disarm
    assert wd.set_timeout(25) == 25
    assert wd.get_timeout() == 25
    wd.keepalive()
    assert wd.close() is True
    assert driver.calls == []
    assert os.read(reader, 100) == b"T25\n1V"


def test_a_fifo_nobody_reads_is_reported_not_waited_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "watchdog")
    os.mkfifo(path, 0o600)
    monkeypatch.setattr(device_mod, "FIFO_CONNECT_WAIT", 0.05)
    with pytest.raises(WatchdogError, match="no watchdog emulator is reading"):
        LinuxWatchdog(path).open()


def test_probe_does_not_open_the_device(tmp_path: Path, fifo: tuple[str, int]) -> None:
    path, reader = fifo
    assert probe(path) is None
    assert os.read(reader, 10) == b""  # nothing connected, nothing written
    assert probe(str(tmp_path / "none")) == f"{tmp_path / 'none'} does not exist"
    (tmp_path / "plain").write_text("")
    assert "neither" in (probe(str(tmp_path / "plain")) or "")


def test_null_device_for_mode_off() -> None:
    wd = make_device("off", "/dev/watchdog")
    assert isinstance(wd, NullWatchdog)
    wd.open()
    assert wd.set_timeout(25) == 25 and wd.get_timeout() == 25
    wd.keepalive()
    assert wd.close() is True
    assert wd.describe() == {"kind": "null", "path": "/dev/watchdog"}
    assert isinstance(make_device("automatic", "/dev/watchdog"), LinuxWatchdog)

