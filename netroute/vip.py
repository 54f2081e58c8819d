"""Add and remove the floating VIP on one interface, over netlink (pyroute2).

One long-lived `IPRoute` handle per manager: opening one costs a socket (and, with
`netns=`, a forked helper of ~9 ms), and the network worker asks every 0.2 s.

The VIP is added as a plain address; the kernel makes it a *secondary* when the interface
already has an address in the same subnet (the usual case with a /24 VIP), so the host's
own address stays the source of outgoing traffic. Caveat: deleting that primary address
deletes every same-subnet secondary too, the VIP included, unless
`net.ipv4.conf.<if>.promote_secondaries=1` (set by `netroute.tuning` when we have the
rights) or the VIP is a /32 (its own subnet). The network worker re-checks `holds()` on
every wake-up and re-adds a VIP that vanished under it.
"""
from __future__ import annotations

import errno
import logging
import socket

from pyroute2 import IPRoute, NetlinkError

from pgwarden.core.errors import PgwardenError
from pgwarden.netroute.tuning import tune_interface

log = logging.getLogger("pgwarden.netroute")


class VipError(PgwardenError):
    """A netlink operation on the VIP failed; the message says which and why."""


class VipManager:
    def __init__(self, interface: str, address: str, prefixlen: int,
                 netns: str | None = None) -> None:
        self.interface = interface
        self.address = address
        self.prefixlen = prefixlen
        self.netns = netns
        # flags=0: with the default O_CREAT pyroute2 would CREATE a missing namespace,
        # silently managing an empty one instead of failing.
        self._ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
        self._tuned_index: int | None = None
        self._tuning_warned = False

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"VipManager({self.address}/{self.prefixlen} on {self.interface}{where})"

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> "VipManager":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- queries ---------------------------------------------------------------------

    def _index(self) -> int | None:
        try:
            found = self._ipr.link_lookup(ifname=self.interface)
        except (NetlinkError, OSError) as e:
            raise VipError(f"cannot look up interface {self.interface}: {e}") from e
        return found[0] if found else None

    def _prefixlens(self, index: int) -> list[int]:
        """Prefix lengths under which our address is on the interface (normally 0 or 1)."""
        try:
            msgs = self._ipr.get_addr(family=socket.AF_INET, index=index)
        except (NetlinkError, OSError) as e:
            raise VipError(f"cannot list the addresses of {self.interface}: {e}") from e
        return [int(m["prefixlen"]) for m in msgs
                if (m.get("IFA_LOCAL") or m.get("IFA_ADDRESS")) == self.address]

    def holds(self) -> bool:
        """True if the VIP is on the interface (under any prefix length)."""
        index = self._index()
        return index is not None and bool(self._prefixlens(index))

    # -- changes ---------------------------------------------------------------------

    def _tune(self, index: int) -> None:
        """Interface sysctls, once per interface incarnation (a re-created link resets them)."""
        if self._tuned_index == index:
            return
        self._tuned_index = index
        problems = tune_interface(self.interface, self.netns)
        if problems and not self._tuning_warned:
            self._tuning_warned = True
            log.warning("could not tune %s for the VIP (the VIP still works; set these by hand or "
                        "grant CAP_NET_ADMIN): %s", self.interface, "; ".join(problems))

    def add(self) -> bool:
        """Put the VIP on the interface. True if this call added it, False if already there."""
        index = self._index()
        if index is None:
            raise VipError(f"interface {self.interface} not found")
        self._tune(index)
        try:
            self._ipr.addr("add", index=index, address=self.address, prefixlen=self.prefixlen)
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                return False
            raise VipError(f"cannot add {self.address}/{self.prefixlen} to {self.interface}: "
                           f"{e}") from e
        except OSError as e:
            raise VipError(f"cannot add {self.address}/{self.prefixlen} to {self.interface}: "
                           f"{e}") from e
        return True

    def remove(self) -> bool:
        """Take the VIP off the interface. True if this call removed it, False if already gone.

        Removes it under whatever prefix length it carries (a stale VIP from an older
        configuration may differ from ours).
        """
        index = self._index()
        if index is None:
            return False  # no interface, no address on it
        removed = False
        for prefixlen in self._prefixlens(index):
            try:
                self._ipr.addr("del", index=index, address=self.address, prefixlen=prefixlen)
                removed = True
            except NetlinkError as e:
                if e.code != errno.EADDRNOTAVAIL:  # 99: someone else removed it first
                    raise VipError(f"cannot remove {self.address}/{prefixlen} from "
                                   f"{self.interface}: {e}") from e
            except OSError as e:
                raise VipError(f"cannot remove {self.address}/{prefixlen} from "
                               f"{self.interface}: {e}") from e
        return removed

    def ensure_absent_at_start(self) -> bool:
        """Remove a VIP left behind by a crashed (SIGKILLed) agent. True if one was there."""
        index = self._index()
        if index is not None:
            self._tune(index)
        removed = self.remove()
        if removed:
            log.warning("removed a stale VIP %s from %s (left by a previous agent)",
                        self.address, self.interface)
        return removed
