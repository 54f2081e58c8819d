"""`make demo` / `pgwarden-lab demo`: a 3-host cluster fails over while a client writes.

Builds a fresh lab, shows the cluster, writes through the VIP from the client namespace,
cuts the primary's power, shows the new primary, the VIP moved (the client's neighbour entry
names the new holder's MAC) and the data intact, boots the old host back as a replica, and
tears the lab down whatever happens (Ctrl-C and errors included). One line per step, with the
time since the start; exit status 1 when a step fails.
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable

from pgwarden.lab.bench import settle
from pgwarden.lab.benchstats import LogTail, ack_time, acked_rows, first_ack_after, missing
from pgwarden.lab.interrupt import interruptible, shielded
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError, random_prefix

Say = Callable[[str], None]

INTRO = """\
pgwarden demo: a PostgreSQL cluster of {n} hosts on this machine, each host a network
namespace with its own address ({subnet}), plus one for etcd and one for a client.
One pgwarden agent per host keeps one primary; the primary holds the floating IP {vip}.
We write through that IP, cut the primary's power, and watch a replica take over."""


def _acked(tail: LogTail, node: str | None = None) -> int:
    """Writes acknowledged so far (by `node`), reading what the writer appended."""
    tail.poll()
    return sum(1 for r in tail.records
               if r["outcome"] == "acked" and (node is None or r["node"] == node))


def _replayed(lab: Lab, host: str, lsn: str) -> bool:
    return lab.sql(host, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn],
                   check=False) == [[True]]


class Demo:
    def __init__(self, lab: Lab, say: Say) -> None:
        self.lab = lab
        self.say = say
        self.t0 = time.monotonic()

    def step(self, msg: str) -> None:
        self.say(f"[{time.monotonic() - self.t0:6.1f} s] {msg}")

    def run(self) -> None:
        lab = self.lab
        o = lab.options
        self.say(INTRO.format(n=len(lab.db_hosts), subnet=lab.state["subnet"], vip=lab.vip))
        self.step(f"building the lab {lab.prefix}: namespaces, a bridge, etcd, {len(lab.db_hosts)}"
                  f" agents (ttl {o['ttl']} s, loop_wait {o['loop_wait']} s, retry_timeout "
                  f"{o['retry_timeout']} s, watchdog {o['watchdog']})")
        t = time.monotonic()
        lab.up(wait=180)
        old = settle(lab)
        replicas = [h for h in lab.db_hosts if h != old]
        self.step(f"cluster up in {time.monotonic() - t:.1f} s: {old} is the primary; "
                  f"{' and '.join(replicas)} stream from it; {old} holds the VIP {lab.vip}")

        log = lab.start_writer("vip", lab.host_dir("client") / "demo-writes.jsonl")
        tail = LogTail(log)
        lab.wait_until(lambda: _acked(tail) >= 200, 30, "200 writes through the VIP")
        old_mac = lab.mac_of(old)
        self.step(f"a client writes a row through the VIP every 10 ms: "
                  f"{len(acked_rows(tail.records))} rows so far, all taken by {old}; the client "
                  f"reaches the VIP at {old}'s MAC {lab.neighbour(lab.vip)[0]}")

        # A point every replica has replayed: rows acknowledged before it must survive.
        # (Replication is asynchronous: rows acknowledged in the last instants may not.)
        lsn = lab.sql(old, "SELECT pg_current_wal_lsn()::text")[0][0]
        t_sync = time.monotonic()
        for r in replicas:
            lab.wait_until(functools.partial(_replayed, lab, r, lsn), 10, f"{r} to replay {lsn}")
        t_crash = time.monotonic()
        lab.crash(old)
        self.step(f"power cut on {old}: its network port is down and every process on it is "
                  f"killed; the others see its lease in etcd expire (ttl {o['ttl']} s)")

        new = lab.wait_until(lambda: lab.primary(replicas), o["ttl"] + 40, "a new primary",
                             step=0.1)
        took = time.monotonic() - t_crash
        third = [h for h in replicas if h != new]
        lab.wait_until(lambda: lab.healthy(replicas) == new, 30, f"{third} to follow {new}")
        self.step(f"{new} is the new primary {took:.1f} s after the crash (it answers 200 on "
                  f"/primary)" + (f"; {third[0]} now follows {new}" if third else ""))
        new_mac = lab.mac_of(new)
        lab.wait_until(lambda: lab.neighbour(lab.vip)[0] == new_mac, 15,
                       f"the client's neighbour entry for the VIP to name {new}'s MAC")
        first = lab.wait_until(lambda: tail.poll() is not None
                               and first_ack_after(tail.records, t_crash, not_node=old), 15,
                               f"a write through the VIP taken by {new}")
        self.step(f"the VIP moved: the client's neighbour entry for {lab.vip} now names {new}'s "
                  f"MAC {new_mac} (was {old_mac}); writes through the VIP work again "
                  f"{ack_time(first) - t_crash:.1f} s after the crash")
        lab.wait_until(lambda: _acked(tail, new) >= 50, 10, f"50 writes taken by {new}")
        lab.stop_writer()
        tail.poll()
        self._check_data(tail.records, old, new, t_sync, t_crash)

        lab.restart(old)
        self.step(f"{old} boots again: its agent finds a leader ({new}) and rejoins as a replica")
        t = time.monotonic()
        settle(lab)
        took = time.monotonic() - t
        how = self._rejoin_method(old)
        # /patroni's timeline comes from a status sample taken once a second: let it catch up.
        tl = lab.timeline(new)
        with contextlib.suppress(TimeoutError):
            lab.wait_until(lambda: all(lab.timeline(h) == tl for h in lab.db_hosts), 10,
                           "every host on the new timeline")
        self.step(f"{old} streams from {new} {took:.1f} s after the boot ({how}); timelines: "
                  + ", ".join(f"{h} {lab.timeline(h)}" for h in lab.db_hosts))

    def _check_data(self, records: list[dict[str, Any]], old: str, new: str, t_sync: float,
                    t_crash: float) -> None:
        rows = self.lab.sql(new, "SELECT id, node FROM lab_writes", timeout=30)
        before = acked_rows(r for r in records if ack_time(r) <= t_sync)
        window = acked_rows(r for r in records if t_sync < ack_time(r) <= t_crash)
        after = acked_rows(r for r in records if ack_time(r) > t_crash)
        lost_before, lost_window = missing(before, rows), missing(window, rows)
        lost_after = missing(after, rows)
        if lost_before or lost_after:
            raise LabError(f"acknowledged rows missing on {new}: {len(lost_before)} written "
                           f"before the crash ({lost_before[:10]}), {len(lost_after)} after "
                           f"({lost_after[:10]})")
        extra = (f"; {len(window)} more were acknowledged in the last {t_crash - t_sync:.2f} s "
                 f"before the cut, {len(lost_window)} of them missing (replication is "
                 "asynchronous: those could be lost)" if window else "")
        self.step(f"data intact: all {len(before)} rows written by {old} before the crash and "
                  f"all {len(after)} written by {new} after it are on {new}{extra}")

    def _rejoin_method(self, host: str) -> str:
        log = self.lab.log_path(host).read_text(errors="replace").splitlines()
        boot = max((i for i, line in enumerate(log) if line.startswith("--- start")), default=0)
        for line in log[boot:]:
            if "pg_rewind from" in line:
                leader, _, outcome = line.split("pg_rewind from", 1)[1].strip().partition(": ")
                return f"rejoined through pg_rewind from {leader}: {outcome!r}"
            if "pg_rewind failed" in line or "basebackup: starting" in line:
                return "pg_rewind was not possible: rejoined through a fresh basebackup"
        return "no rewind was needed"


def run_demo(say: Say, *, prefix: str | None = None, ttl: int = 5, loop_wait: int = 1,
             retry_timeout: int = 2, safety_margin: int = 2, watchdog: str = "automatic") -> int:
    prefix = prefix or "pgwd" + random_prefix()[4:]
    # A scope of its own: agents' shared memory is named by scope and host, and another lab
    # (scope `lab`) may be running on this machine.
    lab = Lab(prefix, hosts=3, scope=f"demo{prefix}", ttl=ttl, loop_wait=loop_wait,
              retry_timeout=retry_timeout, safety_margin=safety_margin, watchdog=watchdog,
              log=say)
    demo = Demo(lab, say)
    ok = False
    try:
        with interruptible():
            demo.run()
        ok = True
    except KeyboardInterrupt:
        demo.step("interrupted")
    except (RuntimeError, TimeoutError, OSError) as e:  # LabError, NetnsError included
        demo.step(f"FAILED: {e}")
    finally:
        with shielded():
            t = time.monotonic()
            try:
                lab.down()
                demo.step(f"lab torn down in {time.monotonic() - t:.1f} s: namespaces, "
                          "processes and files are gone")
            except Exception as e:  # noqa: BLE001 - report, and fail the demo
                demo.step(f"FAILED to tear the lab down ({e}): run "
                          f"`pgwarden-lab down --prefix {prefix}`")
                ok = False
    say("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1
