"""`Lab`: a pgwarden cluster of network-namespace "hosts" on one machine.

Layout (prefix P, default `pgwl` + 4 random characters; subnet 10.A.B.0/24 derived from P):

  P-br      a namespace holding only the Linux bridge `br0` and the host ends `v-<host>`
  P-n1..nN  database hosts: eth0 10.A.B.k/24 (k = 1..N), an agent, PostgreSQL, a watchdog
            emulator; the VIP 10.A.B.100/24 moves between their eth0s
  P-dcs     etcd on 10.A.B.200:2379
  P-client  10.A.B.201: the writer, and every HTTP/SQL request the lab makes (see probe.py)

The root namespace is never touched: no veth end, no address, no route in it. Each veth pair
is created inside P-br with its peer placed straight into the host namespace.

The class is assembled from one file per job: labcore (state, names, processes), labaccess
(exec, HTTP, SQL from inside), labobserve (roles, health, VIP), labbuild (up), labfaults
(crash, restart, partition, freeze), labwriter (the client writer), labteardown (down).
State lives in <labdir>/lab.json, so separate CLI calls and the Python API share one lab.
"""
from __future__ import annotations

from pgwarden.lab.labfaults import LabFaults
from pgwarden.lab.labteardown import LabTeardown
from pgwarden.lab.labwriter import LabWriterControl


class Lab(LabFaults, LabWriterControl, LabTeardown):
    """A lab on this machine. `with Lab(...) as lab:` brings it up and always tears it down.

    Hosts are named `n1..nN`, `dcs`, `client`; `target` arguments also accept `"vip"` or an
    address.
    """

    def __enter__(self) -> "Lab":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
