"""A watchdog emulator for the lab: a FIFO that behaves like /dev/watchdog, and a "reset" that
kills one network namespace's processes.

    python -m pgwarden.fencing.emulator --device PATH --netns NAME --timeout SECONDS [--log FILE]

It creates a FIFO at PATH (mode 0600) and reads it. Protocol (what fencing/device.py writes):

* the first open by a writer ARMS it (the countdown starts), as opening /dev/watchdog does;
  reopening while armed does not ping, as in the kernel;
* `T<seconds>\\n` sets the timeout and pings (the kernel's SETTIMEOUT pings too);
* 'V' pings and arms the magic close; any other byte pings and cancels a pending 'V';
* the writer closing after 'V' DISARMS; closing without 'V' leaves it armed.

When no ping arrives for `timeout` seconds while armed it "resets the host": SIGKILLs every
pid of namespace NAME (`ip netns pids`, each re-checked by its namespace inode) except
itself, flushes the addresses of every interface of NAME but lo, logs one `fired` line
(armed_at, last_keepalive, fired_at on CLOCK_MONOTONIC, shared by every process of the
machine) and exits 0. Without --netns it only logs the expiry. It never touches anything
outside NAME. Every log line is a JSON object with an "event" key.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import IO, Any

EXIT_USAGE = 2


def mono() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the main wait."""


class EventLog:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "mono": round(mono(), 6), "wall": round(time.time(), 6),
                           **fields})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class WatchdogState:
    """The emulated timer. Every method runs under `cond` (the reader thread feeds it)."""

    def __init__(self, timeout: float, log: EventLog) -> None:
        self.cond = threading.Condition()
        self.timeout = timeout
        self.log = log
        self.armed = False
        self.armed_at: float | None = None
        self.last_keepalive: float | None = None
        self.expect_close = False
        self.keepalives = 0
        self._command: bytearray | None = None  # a `T...` line in progress

    def deadline(self) -> float | None:
        if not self.armed or self.last_keepalive is None:
            return None
        return self.last_keepalive + self.timeout

    def _ping(self, now: float) -> None:
        self.last_keepalive = now
        self.keepalives += 1

    def writer_opened(self, now: float) -> None:
        if self.armed:
            self.log.write("reopened", armed=True, last_keepalive=self.last_keepalive)
            return
        self.armed, self.armed_at, self.expect_close = True, now, False
        self.last_keepalive, self.keepalives = now, 0
        self.log.write("armed", timeout=self.timeout)

    def data(self, chunk: bytes, now: float) -> None:
        for byte in chunk:
            if self._command is not None:
                if byte == 0x0A:  # end of a T line
                    self._set_timeout(bytes(self._command), now)
                    self._command = None
                else:
                    self._command.append(byte)
            elif byte == ord("T"):
                self._command = bytearray()
            elif byte == ord("V"):
                self.expect_close = True
                self._ping(now)
            else:
                self.expect_close = False
                self._ping(now)

    def _set_timeout(self, text: bytes, now: float) -> None:
        try:
            value = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            self.log.write("bad_command", text=text.decode("ascii", "replace"))
            return
        if value <= 0:
            self.log.write("bad_command", text=text.decode("ascii", "replace"))
            return
        self.timeout = value
        self._ping(now)
        self.log.write("timeout", timeout=value)

    def writer_closed(self, now: float) -> None:
        self._command = None
        if self.armed and self.expect_close:
            self.armed = False
            self.log.write("disarmed", last_keepalive=self.last_keepalive)
        elif self.armed:
            deadline = self.deadline()
            self.log.write("closed_armed", last_keepalive=self.last_keepalive, fires_at=deadline)
        self.expect_close = False


def reader(path: str, state: WatchdogState) -> None:
    try:
        accept_writers(path, state)
    except Exception as e:  # noqa: BLE001 - the timer keeps running: an armed one must fire
        state.log.write("reader_error", error=repr(e))


def accept_writers(path: str, state: WatchdogState) -> None:
    """One writer at a time: a blocking open returns when a writer opens (= arming)."""
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with state.cond:
            state.writer_opened(mono())
            state.cond.notify_all()
        try:
            while True:
                chunk = os.read(fd, 4096)
                now = mono()
                with state.cond:
                    if chunk:
                        state.data(chunk, now)
                    else:
                        state.writer_closed(now)
                    state.cond.notify_all()
                if not chunk:
                    break
        finally:
            os.close(fd)


# -- the reset -------------------------------------------------------------------------


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def _init_netns_inode() -> int | None:
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return None  # not readable in some containers: the per-pid check still holds


def _pid_in_netns(pid: int, inode: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except OSError:
        return False  # gone, a zombie, or not ours to see


def netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                         timeout=5, check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def kill_netns(name: str, inode: int, me: int) -> list[int]:
    """SIGKILL every process of the namespace; repeat while forks race the kill."""
    killed: list[int] = []
    for _round in range(20):
        victims = [p for p in netns_pids(name) if p != me and _pid_in_netns(p, inode)]
        victims = [p for p in victims if p not in killed]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    return killed


def flush_netns_addresses(name: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "-n", name, "link", "show"], capture_output=True,
                         text=True, timeout=5, check=False).stdout
    flushed = []
    for link in json.loads(out or "[]"):
        ifname = link.get("ifname")
        if not ifname or ifname == "lo":
            continue
        subprocess.run(["ip", "-n", name, "addr", "flush", "dev", ifname], capture_output=True,
                       timeout=5, check=False)
        flushed.append(ifname)
    return flushed


# -- the program -----------------------------------------------------------------------


def make_fifo(path: str, owner: str | None) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISFIFO(st.st_mode):
            raise SystemExit(f"{path} exists and is not a FIFO: refusing to replace it")
        os.unlink(path)  # a leftover of an earlier emulator
    os.mkfifo(path, 0o600)
    os.chmod(path, 0o600)
    if owner:
        import pwd

        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pgwarden.fencing.emulator",
                                 description="A FIFO watchdog emulator that resets a network "
                                             "namespace when it expires.")
    ap.add_argument("--device", required=True, help="FIFO path to create (the device path)")
    ap.add_argument("--netns", help="network namespace to reset on expiry (omit: only log)")
    ap.add_argument("--timeout", type=float, required=True,
                    help="timeout in seconds until a writer sets another (T<seconds>)")
    ap.add_argument("--log", help="append JSON event lines here (default: stderr)")
    ap.add_argument("--owner", help="chown the FIFO to this user (e.g. postgres)")
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stream: IO[str] = sys.stderr
    if args.log:  # kept open for the life of the process: the last line is written at exit
        stream = open(args.log, "a", encoding="utf-8")  # noqa: SIM115
    log = EventLog(stream)
    inode = None
    if args.netns:
        try:
            inode = netns_inode(args.netns)
        except OSError:
            print(f"network namespace {args.netns} does not exist", file=sys.stderr)
            return EXIT_USAGE
        if inode == _init_netns_inode():
            print(f"{args.netns} is the initial network namespace: refusing", file=sys.stderr)
            return EXIT_USAGE
    make_fifo(args.device, args.owner)
    state = WatchdogState(args.timeout, log)
    firing = False

    def on_signal(signum: int, _frame: Any) -> None:
        if not firing:
            raise _Stop(signal.Signals(signum).name)

    threading.Thread(target=reader, args=(args.device, state), daemon=True,
                     name="fifo-reader").start()
    log.write("ready", device=args.device, netns=args.netns, timeout=args.timeout,
              pid=os.getpid())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with state.cond:
            while True:
                deadline = state.deadline()
                now = mono()
                if deadline is not None and now >= deadline:
                    break
                state.cond.wait(0.5 if deadline is None else min(0.5, deadline - now))
            firing = True
            fired_at = mono()
            armed_at, last, timeout = state.armed_at, state.last_keepalive, state.timeout
            keepalives = state.keepalives
    except _Stop as e:
        with state.cond:
            log.write("stopped", signal=str(e), armed=state.armed)
        _unlink(args.device)
        return 0
    killed: list[int] = []
    flushed: list[str] = []
    if args.netns and inode is not None:
        killed = kill_netns(args.netns, inode, os.getpid())
        flushed = flush_netns_addresses(args.netns)
    log.write("fired", device=args.device, netns=args.netns, timeout=timeout,
              armed_at=armed_at, last_keepalive=last, fired_at=round(fired_at, 6),
              late_ms=round((fired_at - (last or fired_at) - timeout) * 1000, 3),
              keepalives=keepalives, killed=killed, flushed=flushed)
    _unlink(args.device)
    return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main())
