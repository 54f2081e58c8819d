"""Faults a lab host can suffer: a power cut and a boot, a pulled cable, a frozen process.

crash: the host's bridge port goes down, every process of its namespace is SIGKILLed (the
watchdog emulator too: it is the host's hardware), eth0's addresses are flushed (RAM is gone,
so is the VIP). restart: anything left is killed, eth0 gets its own address back (no VIP), the
port comes up unless partitioned, then the emulator and the agent start (etcd on dcs).
partition/heal: the bridge port `v-HOST` goes down/up, a cable pulled at the switch (an nft
rule was not an option: nft is not installed here, and a link change needs nothing inside the
host). freeze/thaw: SIGSTOP/SIGCONT by pid; `all` spares the watchdog emulator (a frozen OS
does not freeze the watchdog chip). kill_agent: SIGKILL of the supervisor alone, as systemd's
KillMode=process would (its workers follow by PDEATHSIG; PostgreSQL keeps running);
start_agent: the agent again on a live host, optionally with a watchdog that does not reset.
"""
from __future__ import annotations

import signal

from pgwarden.lab import netns
from pgwarden.lab.labbuild import LabBuild
from pgwarden.lab.labstate import LabError


class LabFaults(LabBuild):
    def crash(self, host: str) -> int:
        """Power cut: port down, SIGKILL of every process in the namespace, addresses gone."""
        with self._locked():
            h = self._host(host)
            if host not in self.state["crashed"]:
                self.state["crashed"].append(host)
            netns.ip("link", "set", h["veth"], "down", ns=self.state["bridge_ns"])
            n = netns.kill_all(h["ns"])
            netns.ip("addr", "flush", "dev", "eth0", ns=h["ns"], check=False)
            self.state["frozen"].pop(host, None)
            if host == "client":
                self._close_probes()
                self.state["writer"] = None
        self._reap()
        return n

    def restart(self, host: str) -> None:
        """Boot: kill what is left, fresh network, then emulator + agent (etcd on dcs)."""
        with self._locked():
            h = self._host(host)
            netns.kill_all(h["ns"])
            self.state["frozen"].pop(host, None)
            if host in self.state["crashed"]:
                self.state["crashed"].remove(host)
            self._boot_network(host)
            if h["kind"] == "db":
                self._start_db_host(host)
            elif h["kind"] == "dcs":
                self._start_etcd()
        self._reap()

    def partition(self, host: str) -> None:
        with self._locked():
            h = self._host(host)
            if host not in self.state["partitioned"]:
                self.state["partitioned"].append(host)
            netns.ip("link", "set", h["veth"], "down", ns=self.state["bridge_ns"])

    def heal(self, host: str) -> None:
        with self._locked():
            h = self._host(host)
            if host in self.state["partitioned"]:
                self.state["partitioned"].remove(host)
            if host not in self.state["crashed"]:
                netns.ip("link", "set", h["veth"], "up", ns=self.state["bridge_ns"])

    def freeze(self, host: str, what: str = "all") -> list[int]:
        with self._locked():
            pids = self.pids(host, what)
            if not pids:
                raise LabError(f"nothing to freeze on {host} ({what})")
            done = netns.signal_pids(pids, signal.SIGSTOP, self.ns(host))
            rec = self.state["frozen"].setdefault(host, {"what": [], "pids": []})
            rec["what"] = sorted(set(rec["what"]) | {what})
            rec["pids"] = sorted(set(rec["pids"]) | set(done))
        return done

    def thaw(self, host: str, what: str | None = None) -> list[int]:
        """SIGCONT what `freeze` stopped (all of it when `what` is None)."""
        with self._locked():
            rec = self.state["frozen"].get(host, {"what": [], "pids": []})
            if what is None or what == "all":
                pids = set(rec["pids"]) | set(netns.pids_in(self.ns(host)))
                self.state["frozen"].pop(host, None)
            else:
                pids = set(self.pids(host, what))
                if not (set(rec["what"]) - {what}):
                    pids |= set(rec["pids"])
                    self.state["frozen"].pop(host, None)
                else:
                    rec["what"] = [w for w in rec["what"] if w != what]
                    rec["pids"] = sorted(set(rec["pids"]) - pids)
            return netns.signal_pids(sorted(pids), signal.SIGCONT, self.ns(host))

    def kill_agent(self, host: str) -> int | None:
        """SIGKILL the agent's supervisor only (systemd `KillMode=process`): the kernel then
        kills its workers (PDEATHSIG; the network worker gets SIGTERM and drops the VIP),
        PostgreSQL, in a session of its own, keeps running. Returns the pid killed."""
        with self._locked():
            pid = self.agent_pid(host)
            if pid is None:
                return None
            netns.signal_pids([pid], signal.SIGKILL, self.ns(host))
        self._wait_gone(pid, 10)
        return pid

    def start_agent(self, host: str, *, watchdog_resets: bool | None = None) -> None:
        """Start the agent on a host that is up (PostgreSQL may still run: the agent adopts
        it). `watchdog_resets=None` keeps the host's emulator as it is (an armed one keeps its
        timer: the new agent must feed it in time); False replaces it with one that only logs
        its expiry (a host that survives its watchdog); True with one that resets the host."""
        with self._locked():
            if self.agent_pid(host) is not None:
                raise LabError(f"the agent of {host} still runs")
            if watchdog_resets is not None and self.state["emulator"]:
                self._stop_emulator(host)
                self._start_emulator(host, reset=watchdog_resets)
            self._start_agent(host)

    def _stop_emulator(self, host: str) -> None:
        """SIGTERM: the emulator exits without firing, even armed, and unlinks its FIFO."""
        pid = self.pid_of(host, "emulator")
        if pid is not None:
            netns.signal_pids([pid], signal.SIGTERM, self.ns(host))
            if not self._wait_gone(pid, 10):
                netns.signal_pids([pid], signal.SIGKILL, self.ns(host))
