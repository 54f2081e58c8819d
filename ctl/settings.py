"""What pgwardenctl needs to know: where the DCS is, which cluster, how to reach the APIs.

Sources, strongest first: command-line options (--dcs-url, --scope, --namespace, -k), the
environment (PGWARDEN_*/PATRONI_* overrides, as the agent reads them), the config file.
The file may be an agent's pgwarden.yml or a patronictl.yaml: only the keys patronictl
reads are used (scope, namespace, etcd3, ctl, restapi.authentication/cafile), and nothing
else is validated, so a file written for patronictl works unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pgwarden.core.config import apply_env
from pgwarden.ctl.config_edit import parse_yaml_document
from pgwarden.ctl.dcs_url import DEFAULT_ETCD_PORT, parse_dcs_url
from pgwarden.ctl.errors import UsageError

DEFAULT_NAMESPACE = "/service/"
DEFAULT_DCS_TIMEOUT = 5.0
CONFIG_ENV_VARS = ("PGWARDENCTL_CONFIG_FILE", "PATRONICTL_CONFIG_FILE")


def default_config_files(home: str) -> tuple[Path, ...]:
    """Read when present, in this order; patronictl's own file last so its users need nothing."""
    return (Path(home, ".config", "pgwarden", "pgwardenctl.yaml"),
            Path(home, ".config", "patroni", "patronictl.yaml"))


@dataclass(frozen=True)
class ApiSettings:
    """How to call members' REST APIs (patronictl: `ctl.*`, falling back to `restapi.*`)."""

    auth: tuple[str, str] | None = None
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Settings:
    config_path: str | None = None
    scope: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    etcd_hosts: tuple[str, ...] = ()
    dcs_timeout: float = DEFAULT_DCS_TIMEOUT
    api: ApiSettings = field(default_factory=ApiSettings)


@dataclass(frozen=True)
class Overrides:
    """The global command-line options that change settings."""

    config_file: str | None = None
    dcs_url: str | None = None
    scope: str | None = None
    namespace: str | None = None
    insecure: bool = False
    dcs_timeout: float | None = None


def load_settings(opts: Overrides, env: Mapping[str, str] | None = None) -> Settings:
    environ: Mapping[str, str] = os.environ if env is None else env
    path = _config_path(opts.config_file, environ)
    doc = apply_env(_read(path) if path else {}, environ)
    hosts = _etcd_hosts(doc)
    namespace = _str(doc, "namespace") or DEFAULT_NAMESPACE
    dcs_url = opts.dcs_url or environ.get("DCS_URL") or None
    if dcs_url:
        parsed = parse_dcs_url(dcs_url)
        hosts = parsed.hosts
        namespace = parsed.namespace or namespace
    if opts.namespace:
        namespace = opts.namespace
    timeout = opts.dcs_timeout if opts.dcs_timeout is not None else DEFAULT_DCS_TIMEOUT
    if timeout <= 0:
        raise UsageError(f"--dcs-timeout must be more than 0 seconds, got {timeout}")
    return Settings(
        config_path=str(path) if path else None,
        scope=opts.scope or _str(doc, "scope"),
        namespace=namespace,
        etcd_hosts=hosts,
        dcs_timeout=timeout,
        api=_api(doc, opts.insecure),
    )


def _config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read, or None. A file named by the user must exist; defaults are optional."""
    named = explicit or next((environ[v] for v in CONFIG_ENV_VARS if environ.get(v)), None)
    if named:
        return Path(named)
    home = environ.get("HOME") or os.path.expanduser("~")
    return next((p for p in default_config_files(home) if p.is_file()), None)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read the config file {path}: {e.strerror or e} (check -c/--config-file)") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read the config file {path}: not UTF-8 text") from None
    return parse_yaml_document(text, f"config file {path}")


def _section(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"config key {key}: must be a mapping, got {type(value).__name__}")
    return value


def _str(doc: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"config key {prefix}{key}: must be a string, got {type(value).__name__}")
    return str(value)


def _etcd_hosts(doc: Mapping[str, Any]) -> tuple[str, ...]:
    if doc.get("etcd3") is None:
        if doc.get("etcd") is not None:
            raise UsageError("config key etcd: the etcd v2 API is not supported, use an etcd3: section")
        return ()
    etcd3 = _section(doc, "etcd3")
    if str(etcd3.get("protocol") or "http").lower() == "https":
        raise UsageError("config key etcd3.protocol: etcd over TLS is not supported by pgwarden yet")
    raw = etcd3.get("hosts") if etcd3.get("hosts") is not None else etcd3.get("host")
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise UsageError("config key etcd3.hosts: must be a list of host:port")
    hosts: list[str] = []
    for item in items:
        text = str(item).strip()
        if "://" in text:
            text = text.split("://", 1)[1]
        if text:
            hosts.append(text if ":" in text.rsplit("]", 1)[-1] else f"{text}:{DEFAULT_ETCD_PORT}")
    return tuple(hosts)


def _auth(section: Mapping[str, Any], prefix: str) -> tuple[str, str] | None:
    """`authentication: {username, password}`, or Patroni's internal `auth: "user:pass"`."""
    auth = _section(section, "authentication") if "authentication" in section else {}
    user = _str(auth, "username", f"{prefix}.authentication.")
    password = _str(auth, "password", f"{prefix}.authentication.")
    if user is not None:
        return user, password or ""
    joined = _str(section, "auth", f"{prefix}.")
    if joined is not None:
        user, _, password = joined.partition(":")
        return user, password
    return None


def _api(doc: Mapping[str, Any], insecure_flag: bool) -> ApiSettings:
    ctl = _section(doc, "ctl")
    restapi = _section(doc, "restapi")
    insecure = ctl.get("insecure")
    return ApiSettings(
        auth=_auth(ctl, "ctl") or _auth(restapi, "restapi"),
        cacert=_str(ctl, "cacert", "ctl.") or _str(restapi, "cafile", "restapi."),
        certfile=_str(ctl, "certfile", "ctl."),
        keyfile=_str(ctl, "keyfile", "ctl."),
        keyfile_password=_str(ctl, "keyfile_password", "ctl."),
        insecure=insecure_flag or insecure is True or str(insecure).lower() in ("true", "on", "yes", "1"),
    )
