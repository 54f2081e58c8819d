"""Load, override from the environment, validate and type pgwarden's YAML configuration.

pgwarden reads Patroni's configuration files, so keys follow Patroni's names. Keys pgwarden
does not use yet are not errors: they load and stay in `Config.raw`, so a Patroni file works
unchanged. Every problem becomes a `ConfigError(key, message)` naming the dotted key, what is
wrong and what to do. Checks run in document order and collect every problem:
`load_config`/`parse_config` raise the first one, `validate_file` returns them all.

Public functions: `load_config`, `parse_config`, `validate_file`, `dynamic_from_dict`,
`apply_env`.
"""
from __future__ import annotations

import copy
import ipaddress
import math
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from typing import Any

import yaml

from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    VipConfig,
    WatchdogConfig,
)
from pgwarden.core.errors import ConfigError

DEFAULT_NAMESPACE = "/service/"
DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
DEFAULT_ETCD_PORT = 2379
DEFAULT_LOG_LEVEL = "INFO"

# Our minimums are lower than Patroni's (ttl >= 20, retry_timeout >= 3) on purpose: pgwarden's
# lease worker renews the lease on its own schedule, not once per HA loop.
MIN_TTL = 2
MIN_LOOP_WAIT = 1
MIN_RETRY_TIMEOUT = 1

# Host parts that mean "every interface": fine to listen on, useless as an address peers dial.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})

# DCS sections Patroni knows that pgwarden does not support (yet).
_OTHER_DCS = ("etcd", "zookeeper", "exhibitor", "consul", "kubernetes", "raft")

# etcd3 ways of finding endpoints other than host/hosts; named in the error so users know why.
_ETCD3_DISCOVERY = ("url", "proxy", "srv", "srv_suffix")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Patroni's watchdog.mode spellings, lower-cased (YAML booleans are handled separately).
_WATCHDOG_MODES = {
    "off": "off",
    "false": "off",
    "disable": "off",
    "disabled": "off",
    "automatic": "automatic",
    "auto": "automatic",
    "required": "required",
    "require": "required",
}

_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})

# Tags Patroni defines, with the type each must have. Other tags are free-form.
_BOOL_TAGS = ("nofailover", "noloadbalance", "clonefrom", "nosync", "nostream")
_INT_TAGS = ("failover_priority", "sync_priority")

# Environment overrides, as Patroni names them (after the PGWARDEN_ or PATRONI_ prefix).
_ENV_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCOPE", ("scope",)),
    ("NAMESPACE", ("namespace",)),
    ("NAME", ("name",)),
    ("RESTAPI_LISTEN", ("restapi", "listen")),
    ("RESTAPI_CONNECT_ADDRESS", ("restapi", "connect_address")),
    ("RESTAPI_USERNAME", ("restapi", "authentication", "username")),
    ("RESTAPI_PASSWORD", ("restapi", "authentication", "password")),
    ("RESTAPI_CERTFILE", ("restapi", "certfile")),
    ("RESTAPI_KEYFILE", ("restapi", "keyfile")),
    ("RESTAPI_KEYFILE_PASSWORD", ("restapi", "keyfile_password")),
    ("RESTAPI_CAFILE", ("restapi", "cafile")),
    ("RESTAPI_CIPHERS", ("restapi", "ciphers")),
    ("RESTAPI_VERIFY_CLIENT", ("restapi", "verify_client")),
    ("RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", ("restapi", "allowlist_include_members")),
    ("ETCD3_HOST", ("etcd3", "host")),
    ("ETCD3_PROTOCOL", ("etcd3", "protocol")),
    ("ETCD3_USERNAME", ("etcd3", "username")),
    ("ETCD3_PASSWORD", ("etcd3", "password")),
    ("ETCD3_CACERT", ("etcd3", "cacert")),
    ("ETCD3_CERT", ("etcd3", "cert")),
    ("ETCD3_KEY", ("etcd3", "key")),
    ("POSTGRESQL_LISTEN", ("postgresql", "listen")),
    ("POSTGRESQL_CONNECT_ADDRESS", ("postgresql", "connect_address")),
    ("POSTGRESQL_DATA_DIR", ("postgresql", "data_dir")),
    ("POSTGRESQL_BIN_DIR", ("postgresql", "bin_dir")),
    ("POSTGRESQL_PGPASS", ("postgresql", "pgpass")),
    ("LOG_LEVEL", ("log", "level")),
) + tuple(
    (f"{user.upper()}_{field.upper()}", ("postgresql", "authentication", user, field))
    for user in ("superuser", "replication", "rewind")
    for field in ("username", "password")
)
_ENV_PREFIXES = ("PGWARDEN_", "PATRONI_")  # first wins


# -- public API ------------------------------------------------------------------------


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read `path`, apply environment overrides and validate; raise the first ConfigError.

    `env` defaults to the process environment; pass {} to ignore it.
    """
    return parse_config(_read_yaml(path), env, path)


def parse_config(
    doc: Any, env: Mapping[str, str] | None = None, path: str | None = None
) -> Config:
    """Validate an already-parsed document (a dict); raise the first ConfigError."""
    problems = _Problems()
    config = _build(problems, doc, env, path)
    if problems.errors or config is None:
        raise problems.errors[0]
    return config


def validate_file(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem in the file as a one-line message; an empty list when it is valid."""
    try:
        doc = _read_yaml(path)
    except ConfigError as e:
        return [str(e)]
    problems = _Problems()
    _build(problems, doc, env, path)
    return [str(e) for e in problems.errors]


def dynamic_from_dict(
    d: Any, *, key: str = "config", repair: bool = False
) -> DynamicConfig:
    """Type the cluster-wide settings: `bootstrap.dcs`, or the DCS `config` key.

    `key` is the dotted prefix used in error messages. With `repair=True` (for the DCS
    `config` key, which patronictl edit-config can set to anything) a timing rule violation
    is corrected the way Patroni does it, and described in `corrections`, instead of raised:
    refusing the cluster's own config would leave every node without one.
    Unknown keys (synchronous_mode, slots, standby_cluster, ...) are kept in `raw`.
    """
    problems = _Problems()
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(key, f"must be a mapping of keys, got {_show(d)}")
    dynamic = _parse_dynamic(problems, d, key, repair)
    if problems.errors:
        raise problems.errors[0]
    return dynamic


def apply_env(doc: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A deep copy of `doc` with PGWARDEN_*/PATRONI_* overrides applied (PGWARDEN_ wins).

    Empty variables are ignored, as if unset. A section that is present but not a mapping is
    left alone, so validation reports it instead of the override hiding it.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    result = copy.deepcopy(dict(doc))
    for suffix, path in _ENV_KEYS:
        value = _env_value(environ, suffix)
        if value is not None:
            _set_path(result, path, value)
    hosts = _env_value(environ, "ETCD3_HOSTS")
    if hosts is not None:
        _set_path(result, ("etcd3", "hosts"), _parse_env_list(hosts))
    allowlist = _env_value(environ, "RESTAPI_ALLOWLIST")
    if allowlist is not None:
        _set_path(result, ("restapi", "allowlist"), _parse_env_list(allowlist))
    return result


# -- problem collection ------------------------------------------------------------------


class _Problems:
    """Every ConfigError found, in document order."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, key: str, message: str) -> None:
        self.errors.append(ConfigError(key, message))

    def has(self, key: str) -> bool:
        return any(e.key == key for e in self.errors)

    def count(self) -> int:
        return len(self.errors)


# -- reading the file --------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys.

    PyYAML silently keeps the last of two identical keys, so a second `postgresql:` section
    would quietly drop the first one's settings. Merge keys (`<<: *anchor`) still override.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=False)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are PyYAML's to reject
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}: merge the two into one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> Any:
    """The parsed document; any file or YAML problem becomes a one-line ConfigError.

    Messages leave the path out, like every other ConfigError: callers print it in front.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"cannot read the file: not UTF-8 text ({e.reason})") from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML{_yaml_where(e)}") from None
    if doc is None:
        raise ConfigError("", "the file is empty: see etc/pgwarden.yml for an example")
    return doc


def _yaml_where(error: yaml.YAMLError) -> str:
    """' at line L, column C: problem' from a PyYAML error, on one line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}"


# -- environment -------------------------------------------------------------------------


def _env_value(environ: Mapping[str, str], suffix: str) -> str | None:
    for prefix in _ENV_PREFIXES:
        value = environ.get(prefix + suffix)
        if value:
            return value
    return None


def _parse_env_list(value: str) -> list[str]:
    """Patroni's list format for PATRONI_ETCD3_HOSTS: `'h1:2379','h2:2379'` or `h1:2379,h2:2379`."""
    items = value.strip().removeprefix("[").removesuffix("]").split(",")
    return [item.strip().strip("'\"").strip() for item in items if item.strip()]


def _set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set doc[a][b][c] = value, creating missing sections; leave non-mapping sections alone."""
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return
        node = child
    node[path[-1]] = value


# -- value readers: each records a problem and returns a usable default --------------------


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _show(value: Any) -> str:
    """A value as a user would recognise it from their YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return type(value).__name__


def _mapping(p: _Problems, section: Mapping[str, Any], key: str, prefix: str) -> dict[str, Any]:
    """A sub-section; {} when absent or null."""
    value = section.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(_join(prefix, key), f"must be a mapping of keys, got {_show(value)}")
        return {}
    return value


def _opt_str(p: _Problems, section: Mapping[str, Any], key: str, prefix: str) -> str | None:
    value = section.get(key)
    if value is None or isinstance(value, str):
        return value
    # A number or boolean was probably meant as text (name: 01, password: 1234, mode: on).
    hint = ": quote it in the YAML" if isinstance(value, (int, float, bool)) else ""
    p.add(_join(prefix, key), f"must be a string, got {_show(value)}{hint}")
    return None


def _req_str(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str, hint: str
) -> str | None:
    """A required, non-empty string; `hint` says what to put there."""
    dotted = _join(prefix, key)
    if section.get(key) is None:
        p.add(dotted, f"is required: {hint}")
        return None
    value = _opt_str(p, section, key, prefix)
    if value is not None and not value.strip():
        p.add(dotted, f"must not be empty: {hint}")
        return None
    return value


def _as_int(value: Any) -> int | None:
    """An int from an int or a string of digits (DCS JSON may hold "30"); None otherwise."""
    if isinstance(value, bool):
        return None  # YAML `true` is not a number, although Python says bool is an int
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    return None


def _int(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str, default: int, minimum: int
) -> int:
    value = section.get(key)
    if value is None:
        return default
    number = _as_int(value)
    if number is None or number < minimum:
        p.add(_join(prefix, key), f"must be an integer >= {minimum}, got {_show(value)}")
        return default
    return number


def _aliased_int(
    p: _Problems,
    section: Mapping[str, Any],
    keys: tuple[str, ...],
    prefix: str,
    default: int,
    minimum: int,
) -> int:
    """The first of `keys` present (the current name first, then Patroni's old names)."""
    for key in keys:
        if section.get(key) is not None:
            return _int(p, section, key, prefix, default, minimum)
    return default


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _bool(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str, default: bool
) -> bool:
    value = section.get(key)
    if value is None:
        return default
    flag = _as_bool(value)
    if flag is None:
        p.add(_join(prefix, key), f"must be true or false, got {_show(value)}")
        return default
    return flag


def _parameters(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str
) -> dict[str, Any]:
    """postgresql.conf parameters: a mapping of names to scalar values."""
    params = _mapping(p, section, key, prefix)
    dotted = _join(prefix, key)
    for name, value in params.items():
        if not isinstance(value, (str, int, float, bool)):
            p.add(
                f"{dotted}.{name}",
                f"must be a string, number or boolean, got {_show(value)}: "
                "write lists as one comma-separated string",
            )
    return dict(params)


def _string_list(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str, what: str
) -> tuple[str, ...]:
    value = section.get(key)
    dotted = _join(prefix, key)
    if value is None:
        return ()
    if not isinstance(value, list):
        p.add(dotted, f"must be a list of strings ({what} each), got {_show(value)}")
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            p.add(f"{dotted}[{i}]", f"must be a string ({what}), got {_show(item)}")
    return tuple(item for item in value if isinstance(item, str))


# -- host:port ---------------------------------------------------------------------------


class _BadAddress(ValueError):
    """A host:port string that does not parse; the message is the part after `got ...`."""


def _split_host_port(text: str, default_port: int | None) -> tuple[list[str], int]:
    """('host[,host]', port) from 'host:port', '[v6]:port' or 'a,b:port'. Hosts keep order."""
    text = text.strip()
    if text.startswith("[") and "]" in text and "," not in text:
        host, _, rest = text[1:].partition("]")
        if not rest and default_port is not None:
            return [host], default_port
        if not rest.startswith(":"):
            raise _BadAddress()
        return [host], _port(rest[1:])
    if ":" not in text:
        if default_port is None:
            raise _BadAddress()
        hosts_text, port = text, default_port
    else:
        hosts_text, _, port_text = text.rpartition(":")
        port = _port(port_text)
    hosts = [h.strip().removeprefix("[").removesuffix("]") for h in hosts_text.split(",")]
    if len(hosts) > 1 and not all(hosts):
        raise _BadAddress()
    return hosts, port


def _port(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise _BadAddress()
    port = int(text)
    if not 1 <= port <= 65535:
        raise _BadAddress(f"port must be between 1 and 65535, got {port}")
    return port


def _address(
    p: _Problems, value: Any, dotted: str, shape: str, *, multi: bool = False,
    default_port: int | None = None,
) -> tuple[list[str], int] | None:
    """Parse one address value; record `expected <shape>, got ...` when it does not parse."""
    try:
        if not isinstance(value, str):
            raise _BadAddress()
        hosts, port = _split_host_port(value, default_port)
        if len(hosts) > 1 and not multi:
            raise _BadAddress()
        return hosts, port
    except _BadAddress as e:
        p.add(dotted, str(e) if str(e) else f"expected {shape}, got {_show(value)}")
        return None


def _host_port(p: _Problems, value: Any, dotted: str) -> HostPort | None:
    parsed = _address(p, value, dotted, "host:port")
    return HostPort(parsed[0][0], parsed[1]) if parsed else None


def _connect_address(
    p: _Problems, section: Mapping[str, Any], prefix: str, listen: HostPort | None,
    listen_text: Any,
) -> HostPort | None:
    """`connect_address`, defaulting to the listen address unless that is a wildcard.

    Peers dial this address (it goes into api_url/conn_url), so 0.0.0.0 or * cannot work.
    """
    dotted = f"{prefix}.connect_address"
    value = section.get("connect_address")
    if value is None:
        if listen is not None and listen.host in _WILDCARD_HOSTS:
            p.add(
                dotted,
                f"is required when {prefix}.listen is a wildcard ({_show(listen_text)}): "
                f"set the address other nodes use to reach this one, e.g. '10.0.0.11:{listen.port}'",
            )
            return None
        return listen
    address = _host_port(p, value, dotted)
    if address is not None and address.host in _WILDCARD_HOSTS:
        p.add(
            dotted,
            f"must be an address other nodes can reach, got {_show(value)}: "
            "use this host's IP address or DNS name",
        )
        return None
    return address


# -- sections ----------------------------------------------------------------------------


def _build(
    p: _Problems, doc: Any, env: Mapping[str, str] | None, path: str | None
) -> Config | None:
    """Check every section in document order; the Config when there was no problem."""
    if not isinstance(doc, dict):
        p.add("", f"the configuration must be a mapping of keys at the top level, got {_show(doc)}")
        return None
    doc = apply_env(doc, env)
    scope = _identifier(p, doc, "scope", "the cluster's name, the same on every node")
    namespace = _opt_str(p, doc, "namespace", "") or DEFAULT_NAMESPACE
    name = _identifier(p, doc, "name", "this node's name, unique in the cluster")
    restapi = _parse_restapi(p, doc)
    etcd3_hosts = _parse_etcd3(p, doc)
    bootstrap = _mapping(p, doc, "bootstrap", "")
    dynamic = _parse_dynamic(p, _mapping(p, bootstrap, "dcs", "bootstrap"), "bootstrap.dcs", False)
    ttl = None if p.has("bootstrap.dcs.ttl") else dynamic.ttl
    postgresql = _parse_postgresql(p, doc)
    watchdog = _parse_watchdog(p, doc, ttl)
    tags = _parse_tags(p, doc)
    log_level = _parse_log_level(p, doc)
    vip = _parse_vip(p, doc, restapi, postgresql)
    if p.errors or not (scope and name and restapi and postgresql):
        return None
    return Config(
        scope=scope,
        namespace=namespace,
        name=name,
        restapi=restapi,
        etcd3_hosts=etcd3_hosts,
        bootstrap_dcs=dynamic,
        postgresql=postgresql,
        watchdog=watchdog,
        tags=tags,
        vip=vip,
        log_level=log_level,
        path=path,
        raw=_effective_raw(doc, namespace, postgresql, watchdog, log_level),
    )


def _identifier(p: _Problems, doc: Mapping[str, Any], key: str, hint: str) -> str | None:
    """scope and name: non-empty, and no '/' because they become DCS key path segments."""
    value = _req_str(p, doc, key, "", f"{hint} (or set PGWARDEN_{key.upper()})")
    if value is not None and "/" in value:
        p.add(key, f"must not contain '/', got {value!r}: it becomes part of DCS key paths")
        return None
    return value


def _parse_restapi(p: _Problems, doc: Mapping[str, Any]) -> RestApiConfig | None:
    section = _mapping(p, doc, "restapi", "")
    if p.has("restapi"):
        return None
    listen_text = section.get("listen")
    if listen_text is None:
        p.add("restapi.listen", "is required: the host:port the REST API listens on, e.g. '0.0.0.0:8008'")
        listen = None
    else:
        listen = _host_port(p, listen_text, "restapi.listen")
    connect = _connect_address(p, section, "restapi", listen, listen_text)
    username, password = _basic_auth(p, section)
    allowlist = _allowlist(p, section)
    include_members = _bool(p, section, "allowlist_include_members", "restapi", False)
    tls = {key: _opt_str(p, section, key, "restapi") or None for key in _RESTAPI_TLS_KEYS}
    verify_client = _verify_client(p, section, tls)
    if tls["keyfile"] and not tls["certfile"]:
        p.add("restapi.keyfile", "is set but restapi.certfile is not: set certfile to serve "
              "https, or remove keyfile")
    if listen is None or connect is None:
        return None
    return RestApiConfig(
        listen, connect, username, password,
        allowlist=allowlist,
        allowlist_include_members=include_members,
        verify_client=verify_client,
        **tls,
    )


# restapi keys that are file paths or TLS strings; checked for type here, loaded (and so
# checked for existence) when the API worker starts, so a file can be validated elsewhere.
_RESTAPI_TLS_KEYS = ("certfile", "keyfile", "keyfile_password", "cafile", "ciphers")
_VERIFY_CLIENT = ("none", "optional", "required")
# A DNS name as RFC 1123 allows it: dot-separated labels of letters, digits and inner dashes.
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _allowlist(p: _Problems, restapi: Mapping[str, Any]) -> tuple[str, ...]:
    """restapi.allowlist: IP addresses, networks (10.0.0.0/24) and host names, as written."""
    entries = _string_list(p, restapi, "allowlist", "restapi", "an IP, a network or a host name")
    value = restapi.get("allowlist")
    good: list[str] = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        if not isinstance(item, str):
            continue  # already reported by _string_list
        if _allowlist_entry_ok(item.strip()):
            good.append(item.strip())
        else:
            p.add(f"restapi.allowlist[{i}]", f"expected an IP address, a network like "
                  f"'10.0.0.0/24' or a host name, got {item!r}")
    return tuple(good) if len(good) == len(entries) else ()


def _allowlist_entry_ok(item: str) -> bool:
    try:
        if "/" in item:
            ipaddress.ip_network(item, strict=False)  # host bits allowed, as Patroni does
        else:
            ipaddress.ip_address(item)
        return True
    except ValueError:
        # digits and dots only is a mistyped IP address (999.1.1.1), not a name
        numeric = re.fullmatch(r"[0-9.]+", item) is not None
        return "/" not in item and not numeric and _HOSTNAME_RE.fullmatch(item) is not None


def _verify_client(p: _Problems, restapi: Mapping[str, Any], tls: Mapping[str, str | None]) -> str:
    """none | optional | required; the last two need TLS and a CA to check certificates with."""
    value = restapi.get("verify_client")
    if value is None:
        return "none"
    mode = value.strip().lower() if isinstance(value, str) else None
    if mode not in _VERIFY_CLIENT:
        p.add("restapi.verify_client", f"must be none, optional or required, got {_show(value)}")
        return "none"
    missing = [f"restapi.{key}" for key in ("certfile", "cafile") if not tls[key]]
    if mode != "none" and missing:
        p.add("restapi.verify_client", f"{mode} needs {' and '.join(missing)}: client "
              "certificates are checked over https against the CA in cafile")
        return "none"
    return mode


def _basic_auth(p: _Problems, restapi: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """restapi.authentication: both or neither, since basic auth needs the pair."""
    auth = _mapping(p, restapi, "authentication", "restapi")
    before = p.count()
    username = _opt_str(p, auth, "username", "restapi.authentication")
    password = _opt_str(p, auth, "password", "restapi.authentication")
    if p.count() == before and (username is None) != (password is None):
        p.add("restapi.authentication", "set both username and password, or neither")
        return None, None
    return username, password


def _parse_etcd3(p: _Problems, doc: Mapping[str, Any]) -> tuple[HostPort, ...]:
    if doc.get("etcd3") is None:
        _no_etcd3(p, doc)
        return ()
    section = _mapping(p, doc, "etcd3", "")
    if not section and p.has("etcd3"):
        return ()
    if section.get("hosts") is not None:
        return _etcd3_hosts(p, section["hosts"])
    if section.get("host") is not None:
        hp = _etcd_endpoint(p, section["host"], "etcd3.host")
        return (hp,) if hp else ()
    other = next((k for k in _ETCD3_DISCOVERY if section.get(k) is not None), None)
    if other:
        p.add(f"etcd3.{other}", "is not supported yet: list the endpoints in etcd3.hosts instead")
    else:
        p.add("etcd3.hosts", "is required: the etcd endpoints as a list of host:port "
              "(or set PGWARDEN_ETCD3_HOSTS)")
    return ()


def _no_etcd3(p: _Problems, doc: Mapping[str, Any]) -> None:
    """Say why a config written for another DCS does not load."""
    other = next((k for k in _OTHER_DCS if doc.get(k) is not None), None)
    if other == "etcd":
        p.add("etcd", "the etcd v2 API is not supported: use etcd3: with the same hosts "
              "(etcd serves the v3 API by default)")
    elif other:
        p.add(other, f"only etcd3 is supported for now: replace the {other}: section with "
              "etcd3: hosts: [host:port, ...]")
    else:
        p.add("etcd3", "is required: add an etcd3: section with hosts: [host:port, ...] "
              "(or set PGWARDEN_ETCD3_HOSTS)")


def _etcd3_hosts(p: _Problems, value: Any) -> tuple[HostPort, ...]:
    """etcd3.hosts: a list, or one comma-separated string, of host[:port] (port 2379)."""
    if isinstance(value, str):
        items: list[Any] = [h.strip() for h in value.split(",") if h.strip()]
        keys = ["etcd3.hosts"] * len(items)
    elif isinstance(value, list):
        items = value
        keys = [f"etcd3.hosts[{i}]" for i in range(len(items))]
    else:
        p.add("etcd3.hosts", f"must be a list of host:port, got {_show(value)}")
        return ()
    if not items:
        p.add("etcd3.hosts", "must list at least one host:port")
        return ()
    parsed = [_etcd_endpoint(p, item, key) for item, key in zip(items, keys)]
    return tuple(hp for hp in parsed if hp is not None)


def _etcd_endpoint(p: _Problems, value: Any, dotted: str) -> HostPort | None:
    if isinstance(value, str) and "://" in value:
        p.add(dotted, f"expected host:port, got {value!r}: drop the scheme and set "
              "etcd3.protocol: https for TLS")
        return None
    parsed = _address(p, value, dotted, "host:port", default_port=DEFAULT_ETCD_PORT)
    if parsed is None:
        return None
    if not parsed[0][0]:
        p.add(dotted, f"expected host:port, got {_show(value)}")
        return None
    return HostPort(parsed[0][0], parsed[1])


def _parse_dynamic(
    p: _Problems, d: Mapping[str, Any], prefix: str, repair: bool
) -> DynamicConfig:
    before = p.count()
    ttl = _int(p, d, "ttl", prefix, 30, MIN_TTL)
    loop_wait = _int(p, d, "loop_wait", prefix, 10, MIN_LOOP_WAIT)
    retry_timeout = _int(p, d, "retry_timeout", prefix, 10, MIN_RETRY_TIMEOUT)
    corrections: tuple[str, ...] = ()
    if p.count() == before:
        loop_wait, retry_timeout, corrections = _check_timing(
            p, prefix, ttl, loop_wait, retry_timeout, repair
        )
    pg = _mapping(p, d, "postgresql", prefix)
    pg_prefix = _join(prefix, "postgresql")
    return DynamicConfig(
        ttl=ttl,
        loop_wait=loop_wait,
        retry_timeout=retry_timeout,
        maximum_lag_on_failover=_int(p, d, "maximum_lag_on_failover", prefix, 1048576, 0),
        primary_start_timeout=_aliased_int(
            p, d, ("primary_start_timeout", "master_start_timeout"), prefix, 300, 0
        ),
        primary_stop_timeout=_aliased_int(
            p, d, ("primary_stop_timeout", "master_stop_timeout"), prefix, 0, 0
        ),
        check_timeline=_bool(p, d, "check_timeline", prefix, False),
        failsafe_mode=_bool(p, d, "failsafe_mode", prefix, False),
        # pgwarden's own key: Patroni hard-codes 2 s for a peer's answer (patroni#3550)
        failsafe_timeout=_int(p, d, "failsafe_timeout", prefix, 2, 1),
        pause=_bool(p, d, "pause", prefix, False),
        use_slots=_bool(p, pg, "use_slots", pg_prefix, True),
        use_pg_rewind=_bool(p, pg, "use_pg_rewind", pg_prefix, False),
        postgresql_parameters=_parameters(p, pg, "parameters", pg_prefix),
        raw=copy.deepcopy(dict(d)),
        corrections=corrections,
    )


def _check_timing(
    p: _Problems, prefix: str, ttl: int, loop_wait: int, retry_timeout: int, repair: bool
) -> tuple[int, int, tuple[str, ...]]:
    """Enforce loop_wait + 2*retry_timeout <= ttl.

    Why: in one cycle a leader may sleep loop_wait, spend up to retry_timeout reading the
    cluster and up to retry_timeout renewing the lock (patroni#1579). If that exceeds ttl,
    the key can expire while the leader still believes it holds it.
    """
    total = loop_wait + 2 * retry_timeout
    if total <= ttl:
        return loop_wait, retry_timeout, ()
    arithmetic = f"({loop_wait} + 2*{retry_timeout} = {total} > {ttl})"
    fixed = _repair_timing(ttl, retry_timeout) if repair else None
    if fixed is None:
        p.add(prefix, f"loop_wait + 2*retry_timeout must be <= ttl {arithmetic}: "
              "lower loop_wait or retry_timeout, or raise ttl")
        return loop_wait, retry_timeout, ()
    note = (f"{prefix}: loop_wait + 2*retry_timeout must be <= ttl {arithmetic}: "
            f"using loop_wait={fixed[0]} and retry_timeout={fixed[1]}")
    return fixed[0], fixed[1], (note,)


def _repair_timing(ttl: int, retry_timeout: int) -> tuple[int, int] | None:
    """Patroni's repair: shorten loop_wait first; if that is not enough, split ttl."""
    if ttl - 2 * retry_timeout >= MIN_LOOP_WAIT:
        return ttl - 2 * retry_timeout, retry_timeout
    retry = (ttl - MIN_LOOP_WAIT) // 2
    return (MIN_LOOP_WAIT, retry) if retry >= MIN_RETRY_TIMEOUT else None


def _parse_postgresql(p: _Problems, doc: Mapping[str, Any]) -> PostgresConfig | None:
    if doc.get("postgresql") is None:
        p.add("postgresql", "is required: at least listen, data_dir and authentication "
              "(superuser and replication users)")
        return None
    pg = _mapping(p, doc, "postgresql", "")
    if p.has("postgresql"):
        return None
    listen_addresses, listen = _pg_listen(p, pg)
    connect = _connect_address(p, pg, "postgresql", listen, pg.get("listen"))
    data_dir = _req_str(p, pg, "data_dir", "postgresql",
                        "the PostgreSQL data directory, e.g. /var/lib/postgresql/15/main")
    bin_dir = _opt_str(p, pg, "bin_dir", "postgresql") or DEFAULT_BIN_DIR
    auth = _mapping(p, pg, "authentication", "postgresql")
    # A broken authentication section is one problem, not three missing usernames.
    auth_ok = not p.has("postgresql.authentication")
    superuser = _credentials(p, auth, "superuser", required=auth_ok)
    replication = _credentials(p, auth, "replication", required=auth_ok)
    rewind = _credentials(p, auth, "rewind", required=False)
    parameters = _parameters(p, pg, "parameters", "postgresql")
    pg_hba = _string_list(p, pg, "pg_hba", "postgresql", "one pg_hba.conf line")
    use_unix_socket = _bool(p, pg, "use_unix_socket", "postgresql", False)
    pgpass = _opt_str(p, pg, "pgpass", "postgresql")
    callbacks = _callbacks(p, pg)
    pre_promote = _command(p, pg.get("pre_promote"), "postgresql.pre_promote")
    callback_timeout = _seconds(p, pg, "callback_timeout", "postgresql", DEFAULT_CALLBACK_TIMEOUT)
    if not (listen and connect and data_dir and superuser and replication):
        return None
    return PostgresConfig(
        data_dir=data_dir,
        bin_dir=bin_dir,
        listen=listen,
        listen_addresses=listen_addresses,
        connect_address=connect,
        superuser=superuser,
        replication=replication,
        parameters=parameters,
        pg_hba=pg_hba,
        use_unix_socket=use_unix_socket,
        pgpass=pgpass,
        rewind=rewind,
        callbacks=callbacks,
        pre_promote=pre_promote,
        callback_timeout=callback_timeout,
    )


def _pg_listen(p: _Problems, pg: Mapping[str, Any]) -> tuple[str, HostPort | None]:
    """postgresql.listen 'host[,host]:port' -> ('host,host', HostPort(first host, port))."""
    value = pg.get("listen")
    if value is None:
        p.add("postgresql.listen", "is required: the host[,host]:port PostgreSQL listens on, "
              "e.g. '0.0.0.0:5432'")
        return "", None
    parsed = _address(p, value, "postgresql.listen", "host[,host]:port", multi=True)
    if parsed is None:
        return "", None
    hosts, port = parsed
    return ",".join(hosts), HostPort(hosts[0], port)


def _credentials(
    p: _Problems, auth: Mapping[str, Any], user: str, *, required: bool
) -> Credentials | None:
    prefix = f"postgresql.authentication.{user}"
    section = _mapping(p, auth, user, "postgresql.authentication")
    if p.has(prefix) or (not section and not required):
        return None
    username = _req_str(p, section, "username", prefix,
                        f"the {user} role's name (or set PGWARDEN_{user.upper()}_USERNAME)")
    password = _opt_str(p, section, "password", prefix)
    return Credentials(username, password) if username else None


# -- callbacks ---------------------------------------------------------------------------

# Patroni's postgresql.callbacks names; each runs as `<command...> <action> <role> <scope>`.
CALLBACK_ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")
DEFAULT_CALLBACK_TIMEOUT = 30.0  # postgresql.callback_timeout (pgwarden only)


def _callbacks(p: _Problems, pg: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """postgresql.callbacks: action name -> argv, each program resolved to an absolute path."""
    section = _mapping(p, pg, "callbacks", "postgresql")
    commands: dict[str, tuple[str, ...]] = {}
    for name, value in section.items():
        key = f"postgresql.callbacks.{name}"
        if name not in CALLBACK_ACTIONS:
            p.add(key, _not_a_callback(name))
            continue
        argv = _command(p, value, key)
        if argv is not None:
            commands[name] = argv
    return commands


def _not_a_callback(name: Any) -> str:
    if name in ("pre_promote", "before_stop"):
        return f"is not a callback: {name} goes directly under postgresql (postgresql.{name})"
    known = ", ".join(CALLBACK_ACTIONS[:-1]) + " or " + CALLBACK_ACTIONS[-1]
    return f"is not a callback: use {known}"


def _command(p: _Problems, value: Any, key: str) -> tuple[str, ...] | None:
    """A command run without a shell: a string split into words as a shell would, or a list."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as e:
            p.add(key, f"cannot split {value!r} into words ({e}): check its quotes")
            return None
    elif isinstance(value, list):
        bad = [i for i, word in enumerate(value) if not isinstance(word, str)]
        for i in bad:
            p.add(f"{key}[{i}]", f"must be a string, got {_show(value[i])}")
        if bad:
            return None
        words = list(value)
    else:
        p.add(key, f"must be a command (a string or a list of strings), got {_show(value)}")
        return None
    if not words or not words[0].strip():
        p.add(key, "must not be empty: give the program to run, e.g. "
              "'/usr/local/bin/callback.sh'")
        return None
    program = _program(p, words[0], key)
    return (program, *words[1:]) if program is not None else None


def _program(p: _Problems, program: str, key: str) -> str | None:
    """The absolute path of an executable `program`, checked now rather than at failover time.

    A name without '/' is looked up in PATH; a relative path is taken from the working
    directory, as Patroni would run it (ours runs callbacks from '/', hence the resolving).
    """
    if "/" not in program:
        found = shutil.which(program)
        if found is None:
            p.add(key, f"{program!r} is not found in PATH: install it or give its absolute path")
            return None
        return os.path.abspath(found)
    path = os.path.abspath(program)
    if not os.path.exists(path):
        p.add(key, f"{path} does not exist: install the script or fix the path")
    elif os.path.isdir(path):
        p.add(key, f"{path} is a directory, not a program")
    elif not os.access(path, os.X_OK):
        p.add(key, f"{path} is not executable: chmod +x it")
    else:
        return path
    return None


def _seconds(
    p: _Problems, section: Mapping[str, Any], key: str, prefix: str, default: float
) -> float:
    """A positive, finite number of seconds (an int, a float or a string of one)."""
    value = section.get(key)
    if value is None:
        return default
    numeric = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]*)?\s*", value) is not None)
    number = float(value) if numeric else None
    if number is None or not (math.isfinite(number) and number > 0):
        p.add(_join(prefix, key), f"must be a number of seconds > 0, got {_show(value)}")
        return default
    return number


def _parse_watchdog(p: _Problems, doc: Mapping[str, Any], ttl: int | None) -> WatchdogConfig:
    section = _mapping(p, doc, "watchdog", "")
    mode = _watchdog_mode(p, section)
    device = _opt_str(p, section, "device", "watchdog") or "/dev/watchdog"
    return WatchdogConfig(mode=mode, device=device, safety_margin=_safety_margin(p, section, ttl))


def _safety_margin(p: _Problems, section: Mapping[str, Any], ttl: int | None) -> int:
    """The device timeout is ttl - safety_margin, so the margin must stay below ttl.

    Unset, it is Patroni's 5 unless that does not fit the short ttl pgwarden allows; then
    -1 (timeout ttl // 2), rather than failing on a value the user never wrote.
    """
    if section.get("safety_margin") is None:
        return 5 if ttl is None or ttl > 5 else -1
    margin = _int(p, section, "safety_margin", "watchdog", 5, -1)
    if ttl is not None and margin >= ttl and not p.has("watchdog.safety_margin"):
        p.add("watchdog.safety_margin",
              f"must be less than bootstrap.dcs.ttl ({ttl}), got {margin}: "
              "the watchdog timeout is ttl - safety_margin")
    return margin


def _watchdog_mode(p: _Problems, section: Mapping[str, Any]) -> str:
    value = section.get("mode")
    if value is None:
        return "automatic"
    if isinstance(value, bool):
        # YAML `off`/`false` mean off; `on`/`true` mean "use it" (Patroni would disable it).
        return "automatic" if value else "off"
    if isinstance(value, str) and value.strip().lower() in _WATCHDOG_MODES:
        return _WATCHDOG_MODES[value.strip().lower()]
    p.add("watchdog.mode", f"must be off, automatic or required, got {_show(value)}")
    return "automatic"


def _parse_tags(p: _Problems, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Tags are kept as written (GET /patroni shows them); only Patroni's own are type-checked."""
    tags = _mapping(p, doc, "tags", "")
    for key in _BOOL_TAGS:
        _bool(p, tags, key, "tags", False)
    for key in _INT_TAGS:
        _int(p, tags, key, "tags", 0, 0)
    _opt_str(p, tags, "replicatefrom", "tags")
    return dict(tags)


def _parse_log_level(p: _Problems, doc: Mapping[str, Any]) -> str:
    section = _mapping(p, doc, "log", "")
    value = section.get("level")
    if value is None:
        return DEFAULT_LOG_LEVEL
    level = value.strip().upper() if isinstance(value, str) else None
    level = "WARNING" if level == "WARN" else level
    if level not in _LOG_LEVELS:
        p.add("log.level", f"must be one of {', '.join(_LOG_LEVELS)}, got {_show(value)}")
        return DEFAULT_LOG_LEVEL
    return level


def _parse_vip(
    p: _Problems,
    doc: Mapping[str, Any],
    restapi: RestApiConfig | None,
    postgresql: PostgresConfig | None,
) -> VipConfig | None:
    section = _mapping(p, doc, "vip", "")
    if not section:
        return None
    address = _vip_address(p, section)
    interface = _req_str(p, section, "interface", "vip",
                         "the network interface that carries the address, e.g. 'eth0'")
    if address is None or interface is None:
        return None
    _vip_not_own_address(p, address, restapi, postgresql)
    return VipConfig(str(address.ip), address.network.prefixlen, interface)


def _vip_address(p: _Problems, section: Mapping[str, Any]) -> ipaddress.IPv4Interface | None:
    """vip.address '10.0.0.10/24', or an address plus vip.prefixlen (default 32)."""
    text = _req_str(p, section, "address", "vip", "the floating IPv4 address, e.g. '10.0.0.10/24'")
    given = section.get("prefixlen")
    prefixlen = 32 if given is None else _as_int(given)
    if prefixlen is None or not 1 <= prefixlen <= 32:
        p.add("vip.prefixlen", f"must be an integer between 1 and 32, got {_show(given)}")
        return None
    if text is None:
        return None
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        p.add("vip.address", f"expected an IPv4 address like '10.0.0.10/24', got {text!r}")
        return None
    if not isinstance(iface, ipaddress.IPv4Interface):
        p.add("vip.address", f"must be an IPv4 address (IPv6 is not supported yet), got {text!r}")
        return None
    return _vip_with_prefix(p, iface, text, section.get("prefixlen"), prefixlen)


def _vip_with_prefix(
    p: _Problems, iface: ipaddress.IPv4Interface, text: str, given: Any, prefixlen: int
) -> ipaddress.IPv4Interface | None:
    if "/" in text:
        if given is not None and iface.network.prefixlen != prefixlen:
            p.add("vip.prefixlen", f"conflicts with the /{iface.network.prefixlen} in vip.address "
                  f"({text!r}): give the prefix length once")
            return None
    else:
        iface = ipaddress.IPv4Interface(f"{iface.ip}/{prefixlen}")
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        kind = "network" if iface.ip == net.network_address else "broadcast"
        p.add("vip.address", f"{iface.ip} is the {kind} address of {net}: pick a host address")
        return None
    return iface


def _vip_not_own_address(
    p: _Problems,
    vip: ipaddress.IPv4Interface,
    restapi: RestApiConfig | None,
    postgresql: PostgresConfig | None,
) -> None:
    """The VIP moves between nodes, so it cannot also be a node's fixed address."""
    own = (
        ("restapi.connect_address", restapi.connect_address if restapi else None),
        ("postgresql.connect_address", postgresql.connect_address if postgresql else None),
    )
    for key, hp in own:
        if hp is not None and hp.host == str(vip.ip):
            p.add("vip.address", f"must differ from {key} ({hp.host}): the VIP moves between "
                  f"nodes; set {key} to this node's own address")
            return


# -- raw ---------------------------------------------------------------------------------


def _effective_raw(
    doc: dict[str, Any],
    namespace: str,
    postgresql: PostgresConfig,
    watchdog: WatchdogConfig,
    log_level: str,
) -> dict[str, Any]:
    """The document (after env overrides) plus the defaults pgwarden applied.

    Only absent, null or empty values are filled; what the user wrote stays as written
    (aliases such as master_start_timeout included). bootstrap.dcs is left exactly as given
    because it is what the first leader writes to the DCS `config` key, as Patroni does.
    """
    raw = copy.deepcopy(doc)
    restapi = raw.get("restapi") or {}
    _fill(raw, ("namespace",), namespace)
    _fill(raw, ("restapi", "connect_address"), restapi.get("listen"))
    _fill(raw, ("postgresql", "connect_address"), str(postgresql.connect_address))
    _fill(raw, ("postgresql", "bin_dir"), postgresql.bin_dir)
    _fill(raw, ("watchdog", "mode"), watchdog.mode)
    _fill(raw, ("watchdog", "device"), watchdog.device)
    _fill(raw, ("watchdog", "safety_margin"), watchdog.safety_margin)
    _fill(raw, ("tags",), {})
    _fill(raw, ("log", "level"), log_level)
    return raw


def _fill(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    if node.get(path[-1]) in (None, ""):
        node[path[-1]] = value
