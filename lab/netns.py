"""Network-namespace primitives for the lab, over the `ip` command (iproute2).

Nothing here touches the root namespace: every `ip` call names a namespace (`ip -n NS`),
veth pairs are created inside the bridge namespace with their peer placed straight into the
host namespace, and processes are found and signalled only when their network namespace is
one of ours (compared by inode, so a recycled pid elsewhere is never hit).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    pass


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def ns_exec(ns: str, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside namespace `ns` (`ip netns exec`), capturing text output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 30)
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=False, **kw)


def list_namespaces() -> list[str]:
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def add(ns: str) -> None:
    if not exists(ns):
        ip("netns", "add", ns)


def delete(ns: str) -> None:
    if exists(ns):
        ip("netns", "del", ns, check=False)


def ns_inode(ns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return None


def pid_netns_inode(pid: int) -> int | None:
    """The inode of `pid`'s network namespace (None for a zombie or a vanished pid)."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")  # 'net:[4026532247]'
    except OSError:
        return None
    try:
        return int(link[link.index("[") + 1:link.index("]")])
    except ValueError:
        return None


def pids_in(ns: str) -> list[int]:
    """Every live pid whose network namespace is `ns` (what `ip netns pids` lists)."""
    ino = ns_inode(ns)
    if ino is None:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and pid_netns_inode(int(entry)) == ino:
            out.append(int(entry))
    return sorted(out)


def in_ns(pid: int, ns: str) -> bool:
    ino = ns_inode(ns)
    return ino is not None and pid_netns_inode(pid) == ino


def signal_pids(pids: Iterable[int], sig: int, ns: str) -> list[int]:
    """Send `sig` to each pid still inside `ns`; returns the pids signalled."""
    done = []
    for pid in pids:
        if not in_ns(pid, ns):
            continue
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


def kill_all(ns: str, timeout: float = 10.0) -> int:
    """SIGKILL every process in `ns` until none is left (children forked meanwhile too).
    Returns how many pids were killed; raises NetnsError if some survive `timeout`."""
    killed: set[int] = set()
    end = time.monotonic() + timeout
    while True:
        pids = pids_in(ns)
        if not pids:
            return len(killed)
        # SIGCONT first is not needed for SIGKILL, which also ends a stopped process.
        killed.update(signal_pids(pids, signal.SIGKILL, ns))
        if time.monotonic() > end:
            raise NetnsError(f"processes left in {ns} after SIGKILL: {pids}")
        time.sleep(0.05)


def sysctl(ns: str, key: str, value: str | int) -> None:
    """Write a net.* sysctl inside `ns` (/proc/sys/net is per network namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")
    out = ns_exec(ns, ["sh", "-c", f"echo {value} > {path}"])
    if out.returncode != 0:
        raise NetnsError(f"sysctl {key}={value} in {ns}: {out.stderr.strip()}")


def addresses(ns: str, dev: str = "eth0") -> list[str]:
    """IPv4 addresses of `dev` in `ns`, as 'a.b.c.d/len'."""
    out = ip("-j", "-4", "addr", "show", "dev", dev, ns=ns, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])
            if a.get("family") == "inet"]


def link_state(ns: str, dev: str) -> str | None:
    """'UP', 'DOWN', 'LOWERLAYERDOWN'... (operstate), None if there is no such link."""
    out = ip("-j", "link", "show", "dev", dev, ns=ns, check=False)
    if out.returncode != 0:
        return None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None
    return data[0].get("operstate") if data else None


def link_admin_up(ns: str, dev: str) -> bool:
    out = ip("-j", "link", "show", "dev", dev, ns=ns, check=False)
    try:
        data = json.loads(out.stdout) if out.returncode == 0 else []
    except ValueError:
        return False
    return bool(data) and "UP" in data[0].get("flags", [])
