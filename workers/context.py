"""What every worker process gets from the supervisor when it is forked."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pgwarden.core.config_model import Config
from pgwarden.core.shm import SharedState
from pgwarden.core.wakeup import Wakeups


@dataclass
class WorkerContext:
    name: str  # the worker's section name: lease, postgres, api, watchdog, network
    config: Config
    shm: SharedState
    wakeups: Wakeups
    log: logging.Logger

    def publish(self, data: dict) -> None:
        """Publish this worker's section and wake the supervisor."""
        self.shm.publish(self.name, data)
        self.wakeups.poke("supervisor")

    def intent(self) -> dict:
        """The supervisor's current intent (empty until the first decision)."""
        return self.shm.read("supervisor").data.get("intent") or {}
