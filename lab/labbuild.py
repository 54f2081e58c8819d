"""Bringing a lab up: namespaces and the bridge, a host's network at boot, etcd, the
watchdog emulators and the agents."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
from pathlib import Path

import yaml

from pgwarden.lab import netns
from pgwarden.lab.common import PG_BIN, log_tail, spawn, wait_until
from pgwarden.lab.etcd import ETCD_BIN, EtcdProcess
from pgwarden.lab.labconfig import host_config
from pgwarden.lab.labobserve import LabObserve
from pgwarden.lab.labstate import (
    BRIDGE,
    EMULATOR_MODULE,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    LabError,
    emulator_available,
)


class LabBuild(LabObserve):
    def up(self, wait: float | None = 120.0) -> str | None:
        """Build the namespaces, start etcd, the emulators and the agents. With `wait`, wait
        (that many seconds) for one primary with every other host a replica; returns its name."""
        self._preflight()
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.lab_dir, 0o755)
        self.state["phase"] = "building"
        self._save()  # from here on, `down` finds what was built even if we fail
        pg = pwd.getpwnam("postgres")
        for name, h in self.hosts.items():
            d = Path(h["dir"])
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
            if h["kind"] == "db":
                # PostgreSQL puts its unix socket in the data dir's parent.
                os.chown(d, pg.pw_uid, pg.pw_gid)
        self._build_network()
        mode = self.state["options"]["watchdog"]
        if mode != "off" and not emulator_available():
            self.log(f"warning: {EMULATOR_MODULE} is not importable: no watchdog emulator, "
                     "agents run with watchdog mode off")
            mode = "off"
        self.state["watchdog_mode"] = mode
        self.state["emulator"] = mode != "off"
        self._start_etcd()
        for host in self.db_hosts:
            self._write_config(host)
        for host in self.db_hosts:
            self._start_db_host(host)
        self.state["phase"] = "up"
        self._save()
        if wait:
            return self.wait_until(self.healthy, wait, "one primary and every other host a replica")
        return None

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        for tool in ("ip",):
            if shutil.which(tool) is None:
                raise LabError(f"`{tool}` not found (install iproute2)")
        if not os.access(ETCD_BIN, os.X_OK):
            raise LabError(f"{ETCD_BIN} not found (apt-get install etcd-server)")
        if not os.access(os.path.join(PG_BIN, "postgres"), os.X_OK):
            raise LabError(f"{PG_BIN}/postgres not found (apt-get install postgresql-15)")
        taken = [n for n in netns.list_namespaces() if n.startswith(self.prefix + "-")]
        if taken or self.state_path.exists():
            raise LabError(f"lab {self.prefix} already exists ({', '.join(taken) or self.lab_dir}):"
                           f" `down --prefix {self.prefix}` first")

    def _build_network(self) -> None:
        br = self.state["bridge_ns"]
        netns.add(br)
        netns.ip("link", "add", BRIDGE, "type", "bridge", ns=br)
        netns.ip("link", "set", BRIDGE, "up", ns=br)
        netns.ip("link", "set", "lo", "up", ns=br)
        for name, h in self.hosts.items():
            netns.add(h["ns"])
            netns.ip("link", "add", h["veth"], "type", "veth", "peer", "name", "eth0",
                     "netns", h["ns"], ns=br)
            netns.ip("link", "set", h["veth"], "master", BRIDGE, ns=br)
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.arp_ignore", 1)
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.arp_announce", 2)
            # Deleting eth0's own address must not take the VIP (a same-subnet secondary) along.
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.promote_secondaries", 1)
            self._boot_network(name)

    def _boot_network(self, host: str) -> None:
        """A host's network as after a boot: lo and eth0 up, its own address only."""
        h = self._host(host)
        ns = h["ns"]
        netns.ip("link", "set", "lo", "up", ns=ns)
        if not any(a.startswith("127.0.0.1/") for a in netns.addresses(ns, "lo")):
            netns.ip("addr", "add", "127.0.0.1/8", "dev", "lo", ns=ns, check=False)
        netns.ip("addr", "flush", "dev", "eth0", ns=ns, check=False)
        netns.ip("addr", "add", f"{h['address']}/24", "dev", "eth0", ns=ns)
        netns.ip("link", "set", "eth0", "up", ns=ns)
        if host not in self.state["partitioned"]:
            netns.ip("link", "set", h["veth"], "up", ns=self.state["bridge_ns"])

    def set_sync(self, on: bool = True) -> None:
        """Switch the static `synchronous_standby_names = 'ANY 1 (every member)'` on (or
        off) in every agent's config file and SIGHUP the live agents, which reload it into
        PostgreSQL. For a lab bootstrapped without it: an agent bootstrapping with the setting
        waits for a synchronous standby that cannot exist yet (tests/lab/test_lab_fencing.py)."""
        with self._locked():
            self.state["options"]["sync"] = on
            for host in self.db_hosts:
                self._write_config(host)
                pid = self.agent_pid(host)
                if pid is not None:
                    netns.signal_pids([pid], signal.SIGHUP, self.ns(host))

    def _write_config(self, host: str) -> None:
        self._db(host)
        path = self.config_path(host)
        path.write_text(yaml.safe_dump(host_config(self.state, host), sort_keys=False))
        os.chmod(path, 0o644)

    def _start_etcd(self) -> None:
        h = self._host("dcs")
        etcd = EtcdProcess(Path(h["dir"]) / "etcd", name="etcd", host=h["address"],
                           client_port=ETCD_CLIENT_PORT, peer_port=ETCD_PEER_PORT,
                           netns=h["ns"], cluster_token=f"pgwarden-{self.prefix}",
                           die_with_parent=False)
        etcd.start(timeout=20)
        pid = etcd.pid
        assert pid is not None
        if etcd._proc is not None:
            self._children.append(etcd._proc)  # reaped by us while we live
        etcd.detach()
        self._record("dcs", "etcd", pid)

    def _start_db_host(self, host: str) -> None:
        if self.state["emulator"]:
            self._start_emulator(host)
        self._start_agent(host)

    def _start_emulator(self, host: str, reset: bool = True) -> None:
        """The host's watchdog "hardware". `reset=False`: an emulator that only logs its
        expiry (no --netns), i.e. a host that survives a watchdog firing."""
        h = self._db(host)
        d = Path(h["dir"])
        dev = d / "watchdog"
        # a FIFO left by an earlier emulator would end the wait below before this one runs
        dev.unlink(missing_ok=True)
        cmd = ["ip", "netns", "exec", h["ns"], self.python, "-m", EMULATOR_MODULE,
               "--device", str(dev), *(["--netns", h["ns"]] if reset else []),
               "--timeout", str(self.state["options"]["watchdog_timeout"]),
               "--log", str(d / "watchdog.log")]
        proc, logf = spawn(cmd, d / "watchdog.out", cwd=d)
        logf.close()
        self._children.append(proc)
        self._record(host, "emulator", proc.pid)
        wait_until(lambda: dev.is_fifo() or proc.poll() is not None, 10,
                   f"the watchdog emulator of {host} to create {dev}", step=0.05)
        if proc.poll() is not None:
            raise LabError(f"watchdog emulator of {host} exited:\n{log_tail(d / 'watchdog.out')}")

    def _start_agent(self, host: str) -> None:
        h = self._db(host)
        d = Path(h["dir"])
        cmd = ["ip", "netns", "exec", h["ns"], self.python, "-m", "pgwarden.supervisor.main",
               str(self.config_path(host))]
        proc, logf = spawn(cmd, self.log_path(host), cwd=d)
        logf.close()
        self._children.append(proc)
        self._record(host, "agent", proc.pid)
