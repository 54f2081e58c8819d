"""Per-interface IPv4 sysctls that make a floating VIP behave.

- promote_secondaries=1: deleting the host's primary address (DHCP renewal, an operator's
  `ip addr del`) otherwise deletes every secondary of the same subnet, the VIP included;
  with it, a secondary is promoted instead. (A /32 VIP is its own subnet and is not affected.)
- arp_ignore=1: answer ARP only for addresses configured on the interface the request came
  in on, so another interface of this host never answers for the VIP.
- arp_announce=2: ARP requests we send use the best local source for the target's subnet,
  not the VIP, so neighbours do not learn the VIP from our own traffic after we dropped it.

Writing them needs CAP_NET_ADMIN in the interface's network namespace. Without it the VIP
still works; `tune_interface` returns the problems and the caller logs them once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Callable

SETTINGS: tuple[tuple[str, str], ...] = (
    ("promote_secondaries", "1"),
    ("arp_ignore", "1"),
    ("arp_announce", "2"),
)
CLONE_NEWNET = 0x40000000


def _write_all(interface: str) -> list[str]:
    problems: list[str] = []
    for key, value in SETTINGS:
        path = f"/proc/sys/net/ipv4/conf/{interface}/{key}"
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            problems.append(f"net.ipv4.conf.{interface}.{key}={value}: {e.strerror or e}")
    return problems


def _in_netns(netns: str, fn: Callable[[], list[str]]) -> list[str]:
    """Run fn in a fresh thread moved into `netns`.

    setns(CLONE_NEWNET) only moves the calling thread, and /proc/sys/net resolves against
    the opening thread's namespace: so the write lands in `netns` and the rest of the
    process (the root namespace in a test) is never touched. The thread then exits.
    """
    out: list[str] = []

    def body() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            out.append(f"network namespace {netns}: {e.strerror}")
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                out.append(f"setns({netns}): {os.strerror(ctypes.get_errno())}")
                return
        finally:
            os.close(fd)
        out.extend(fn())

    t = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    return out


def tune_interface(interface: str, netns: str | None = None) -> list[str]:
    """Apply SETTINGS to `interface`; return one sentence per setting that failed."""
    if "/" in interface or interface in ("", ".", ".."):
        return [f"refusing a suspicious interface name {interface!r}"]
    if netns is None:
        return _write_all(interface)
    return _in_netns(netns, lambda: _write_all(interface))
