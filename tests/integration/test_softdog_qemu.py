"""pgwarden's watchdog code against the real kernel driver: `softdog` in a qemu VM.

Two boots (pgwarden.lab.qemu_watchdog), each running fencing/device.py's LinuxWatchdog with the
real ioctls and writes:

1. fed, then disarmed: set a 3 s timeout and read it back, identify the driver (GETSUPPORT),
   try a second open (EBUSY), feed every second for 8 s, magic close, stay up 7 s more, power
   off;
2. a hung feeder: feed three times, then sleep forever with the device still open.

The guest's end is seen by qemu (`-no-reboot`: a reset ends it, announced on QMP as
`guest-reset`; `poweroff -f` as `guest-shutdown`), so "no reset" and "reset" are facts, not a
missing line on a console. Skipped only if qemu, the kernel or busybox cannot be installed.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pgwarden.fencing import linux_abi as abi
from pgwarden.lab import qemu_watchdog as qw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # + apt on the first run

TIMEOUT = 3  # seconds: short, so the hung case ends soon, yet several feeds fit in it
FED_FOR = 8.0
BOOT_LIMIT = 120.0  # host seconds per boot; a boot takes ~15-30 s under TCG
SOFTDOG_IDENTITY = "Software Watchdog"


def _report(name: str, result: qw.BootResult) -> None:
    # on stderr so `pytest -s` (and a failing run's captured output) shows the timings
    boot = result.boot_seconds()
    print(f"\n[softdog-qemu] {name}: wall {result.wall:.1f} s, scenario started "
          f"{'never' if boot is None else f'{boot:.1f} s'} after qemu, end {result.shutdown_reason}"
          f"{' (' + str(result.reset_cause) + ')' if result.reset else ''}",
          file=sys.stderr)


@pytest.fixture(scope="module")
def kernel() -> Iterator[qw.Kernel]:
    try:
        raw = qw.prepare(install=True)
    except qw.QemuUnavailable as e:
        print(f"\n[softdog-qemu] skipped: {e}", file=sys.stderr)
        pytest.skip(f"this machine cannot boot the qemu lab VM: {e}")
    with qw.fast_kernel(raw) as unpacked:  # one unpacking for both boots
        yield unpacked


@pytest.fixture(scope="module")
def fed(kernel: qw.Kernel) -> Iterator[qw.BootResult]:
    result = qw.run_scenario(qw.scenario_fed_then_disarmed(TIMEOUT, fed_for=FED_FOR),
                             timeout=BOOT_LIMIT, kernel=kernel)
    _report("fed then disarmed", result)
    yield result


@pytest.fixture(scope="module")
def hung(kernel: qw.Kernel) -> Iterator[qw.BootResult]:
    result = qw.run_scenario(qw.scenario_hung_feeder(TIMEOUT), timeout=BOOT_LIMIT,
                             kernel=kernel)
    timing = qw.reset_after_last_feed(result)
    _report("hung feeder", result)
    print(f"[softdog-qemu] reset after the last feed: {timing}", file=sys.stderr)
    yield result


def _setup(result: qw.BootResult) -> dict[str, Any]:
    setup = result.marker("setup")
    assert setup is not None, f"the scenario never opened the watchdog\n{result.diagnostics()}"
    return setup.fields


@pytest.mark.parametrize("boot", ["fed", "hung"])
def test_the_timeout_read_back_is_the_one_set(boot: str, request: pytest.FixtureRequest) -> None:
    result: qw.BootResult = request.getfixturevalue(boot)
    setup = _setup(result)
    assert setup["requested"] == TIMEOUT
    assert setup["effective"] == TIMEOUT, result.diagnostics()  # what set_timeout() returned
    assert setup["read_back"] == TIMEOUT, result.diagnostics()  # a separate GETTIMEOUT
    assert setup["sysfs"] == {"identity": SOFTDOG_IDENTITY, "state": "active",
                              "timeout": str(TIMEOUT), "nowayout": "0"}, result.diagnostics()


def test_getsupport_identifies_softdog_and_its_options(fed: qw.BootResult) -> None:
    setup = _setup(fed)
    assert setup["kind"] == "linux"  # a character device driven by ioctls, not the emulator
    assert setup["identity"] == SOFTDOG_IDENTITY
    options = setup["options"]
    assert isinstance(options, int)
    for flag in (abi.WDIOF_SETTIMEOUT, abi.WDIOF_MAGICCLOSE, abi.WDIOF_KEEPALIVEPING):
        assert options & flag, f"GETSUPPORT options {options:#x} lack {flag:#x}"
    assert setup["nowayout"] is False and setup["can_disarm"] is True
    # softdog has no GETTIMELEFT (EOPNOTSUPP): the device must say "unknown", not fail
    assert setup["timeleft"] is None


def test_a_second_opener_is_refused_with_a_sentence(fed: qw.BootResult) -> None:
    second = fed.marker("second-open")
    assert second is not None, fed.diagnostics()
    assert second.fields["error"] is not None, "the kernel let a second process open it"
    assert "busy" in second.fields["error"]  # EBUSY, mapped by LinuxWatchdog._open_chr


def test_no_reset_while_fed(fed: qw.BootResult) -> None:
    feeds = [m.fields["mono"] for m in fed.markers("feed")]
    assert len(feeds) >= FED_FOR - 1, fed.diagnostics()
    assert feeds[-1] - feeds[0] > 2 * TIMEOUT, "fed for too short a time to prove anything"
    gaps = [b - a for a, b in itertools.pairwise(feeds)]
    assert max(gaps) < TIMEOUT, f"feeds {gaps} too far apart to count as kept fed"
    assert fed.marker("closed") is not None, fed.diagnostics()  # still running after the feeds
    assert fed.kernel_line(qw.SOFTDOG_FIRED) is None, fed.diagnostics()


def test_magic_close_disarms_and_the_guest_stays_up(fed: qw.BootResult) -> None:
    closed = fed.marker("closed")
    assert closed is not None, fed.diagnostics()
    assert closed.fields["disarmed"] is True  # LinuxWatchdog.close() says the timer stopped
    assert closed.fields["sysfs"]["state"] == "inactive"  # and so does the kernel
    alive = fed.marker("alive-after-close")
    assert alive is not None, fed.diagnostics()
    assert alive.fields["seconds"] > TIMEOUT + 3
    exited = fed.marker("scenario-exit")
    assert exited is not None and exited.fields["rc"] == 0, fed.diagnostics()
    assert not fed.timed_out
    assert fed.shutdown_reason == "guest-shutdown", fed.diagnostics()  # powered off, not reset
    assert not fed.reset


def test_a_hung_feeder_is_reset_timeout_seconds_after_its_last_feed(hung: qw.BootResult) -> None:
    assert not hung.timed_out, hung.diagnostics()
    assert hung.marker("hung") is not None, hung.diagnostics()  # alive and fed, then hung
    assert hung.marker("scenario-exit") is None, hung.diagnostics()  # never got to exit
    assert hung.reset, hung.diagnostics()
    assert hung.reset_cause == "softdog", hung.diagnostics()
    timing = qw.reset_after_last_feed(hung)
    assert timing is not None, hung.diagnostics()
    low, high = TIMEOUT - 0.5, TIMEOUT + 3
    assert low <= timing.host <= high, f"reset {timing.host:.3f} s after the last feed (host)"
    assert timing.guest is not None, hung.diagnostics()
    assert low <= timing.guest <= high, f"reset {timing.guest:.3f} s after the last feed (guest)"
