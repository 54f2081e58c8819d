"""What every worker process gets from the supervisor when it is forked."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pgwarden.core.config_model import Config
from pgwarden.core.errors import ConfigError
from pgwarden.core.shm import SharedState
from pgwarden.core.wakeup import Wakeups


@dataclass
class WorkerContext:
    name: str  # the worker's section name: lease, postgres, api, watchdog, network
    config: Config
    shm: SharedState
    wakeups: Wakeups
    log: logging.Logger
    config_generation: int = 0

    def publish(self, data: dict[str, Any]) -> None:
        """Publish this worker's section and wake the supervisor."""
        self.shm.publish(self.name, data)
        self.wakeups.poke("supervisor")

    def supervisor(self) -> dict[str, Any]:
        return self.shm.read("supervisor").data

    def intent(self) -> dict[str, Any]:
        """The supervisor's current intent (empty until the first decision)."""
        return self.supervisor().get("intent") or {}

    def refresh_config(self) -> bool:
        """Re-read the config file after the supervisor reloaded it (SIGHUP). True if new."""
        generation = int(self.supervisor().get("config_generation") or 0)
        if generation <= self.config_generation or not self.config.path:
            return False
        self.config_generation = generation
        from pgwarden.core.config import load_config

        try:
            self.config = load_config(self.config.path)
        except ConfigError as e:  # the supervisor validated it; the file changed again since
            self.log.error("keeping the previous configuration: %s", e)
            return False
        self.log.info("configuration reloaded (generation %d)", generation)
        return True
