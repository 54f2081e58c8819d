"""The typed configuration every process reads. Loading and validation: core/config.py.

Field names follow Patroni's YAML keys; `raw` keeps the whole validated document (with
defaults applied) so nothing a user wrote is lost, even keys pgwarden does not use yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None = None


@dataclass(frozen=True)
class RestApiConfig:
    listen: HostPort
    connect_address: HostPort
    username: str | None = None  # restapi.authentication
    password: str | None = None
    # Who may call the unsafe methods: IPs, CIDR networks or host names (resolved when the
    # API worker loads the config), plus the hosts of the members' api_url when include_members.
    allowlist: tuple[str, ...] = ()
    allowlist_include_members: bool = False
    # TLS: set certfile to serve https (keyfile when the key is not in certfile).
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    cafile: str | None = None  # the CA that signs client certificates (verify_client)
    ciphers: str | None = None  # OpenSSL cipher list; None keeps Python's defaults
    verify_client: str = "none"  # none | optional (unsafe methods need a cert) | required (all)

    @property
    def scheme(self) -> str:
        """How peers, patronictl and load balancers must dial us (it goes into api_url)."""
        return "https" if self.certfile else "http"


@dataclass(frozen=True)
class PostgresConfig:
    data_dir: str
    bin_dir: str
    listen: HostPort  # first host of `listen` (Patroni allows a comma list; all go to listen_addresses)
    listen_addresses: str  # the raw comma-separated host list for listen_addresses
    connect_address: HostPort
    superuser: Credentials
    replication: Credentials
    parameters: dict[str, Any] = field(default_factory=dict)
    pg_hba: tuple[str, ...] = ()
    use_unix_socket: bool = False
    pgpass: str | None = None
    rewind: Credentials | None = None  # authentication.rewind (pg_rewind's user); None: use the superuser
    # postgresql.callbacks: action name (on_start, ...) -> argv; the program is an absolute path
    # resolved at load time, so a missing script is a config error, not a surprise at failover.
    callbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pre_promote: tuple[str, ...] | None = None  # argv; a failure aborts the promotion
    callback_timeout: float = 30.0  # pgwarden only: seconds before a callback is killed


@dataclass(frozen=True)
class DynamicConfig:
    """The cluster-wide settings (bootstrap.dcs, later the DCS `config` key)."""

    ttl: int = 30
    loop_wait: int = 10
    retry_timeout: int = 10
    maximum_lag_on_failover: int = 1048576
    primary_start_timeout: int = 300
    primary_stop_timeout: int = 0
    check_timeline: bool = False
    failsafe_mode: bool = False
    failsafe_timeout: int = 2  # seconds for each peer's answer to POST /failsafe
    pause: bool = False
    use_slots: bool = True
    use_pg_rewind: bool = False
    postgresql_parameters: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the dict exactly as given (what /config holds)
    # Sentences describing timing values repaired by dynamic_from_dict(repair=True); log them.
    corrections: tuple[str, ...] = ()


@dataclass(frozen=True)
class WatchdogConfig:
    mode: str = "automatic"  # off | automatic | required (aliases normalised)
    device: str = "/dev/watchdog"
    safety_margin: int = 5


@dataclass(frozen=True)
class VipConfig:
    address: str  # the floating IPv4 address
    prefixlen: int
    interface: str


@dataclass(frozen=True)
class Config:
    scope: str
    namespace: str
    name: str
    restapi: RestApiConfig
    etcd3_hosts: tuple[HostPort, ...]
    bootstrap_dcs: DynamicConfig
    postgresql: PostgresConfig
    watchdog: WatchdogConfig
    tags: dict[str, Any]
    vip: VipConfig | None
    log_level: str = "INFO"
    path: str | None = None  # the file it was loaded from (for SIGHUP reloads)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def nofailover(self) -> bool:
        v = self.tags.get("nofailover", False)
        return v is True or (isinstance(v, str) and v.lower() in ("true", "on", "yes", "1"))
