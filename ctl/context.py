"""Everything a command needs, in one object: settings, streams, the DCS, the REST client, time.

Commands receive it instead of reaching for globals, so unit tests hand in a fake store,
a fake API, string streams and a fake clock.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from pgwarden.ctl.dcs_access import ClusterStore, dcs_call, open_store
from pgwarden.ctl.errors import UsageError
from pgwarden.ctl.prompts import Prompter
from pgwarden.ctl.rest import ApiResponse, RestClient
from pgwarden.ctl.settings import Settings
from pgwarden.dcs.model import ClusterView, Member


class Api(Protocol):
    def request(self, member: Member, method: str, endpoint: str, body: Any = None,
                timeout: float | None = None) -> ApiResponse: ...


@dataclass
class Ctx:
    settings: Settings
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    store_factory: Callable[[Settings, str], ClusterStore] = open_store
    api: Api | None = None
    mono: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime.datetime] = datetime.datetime.now
    force: bool = False
    _stores: dict[str, ClusterStore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.api is None:
            self.api = RestClient(self.settings.api)

    @property
    def rest(self) -> Api:
        assert self.api is not None
        return self.api

    @property
    def prompter(self) -> Prompter:
        return Prompter(self.stdin, self.out, self.force)

    def cluster_name(self, given: str | None) -> str:
        name = given or self.settings.scope
        if not name:
            raise UsageError("no cluster name: give it as an argument, with --scope, "
                             "or as scope: in the config file (-c)")
        if "/" in name:
            raise UsageError(f"cluster name {name!r} must not contain '/'")
        return name

    def store(self, cluster: str) -> ClusterStore:
        if cluster not in self._stores:
            self._stores[cluster] = self.store_factory(self.settings, cluster)
        return self._stores[cluster]

    def read(self, cluster: str) -> ClusterView:
        store = self.store(cluster)
        view: ClusterView = dcs_call(f"read cluster {cluster} from the DCS", store.read_cluster)
        return view

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(f"pgwardenctl: {text}\n")
        self.err.flush()

    def stamp(self) -> str:
        """A wall-clock time for progress lines, to the millisecond."""
        return self.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    def close(self) -> None:
        for store in self._stores.values():
            with contextlib.suppress(Exception):  # closing must never hide the command's own result
                store.close()
        self._stores.clear()
