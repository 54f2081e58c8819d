"""core/config.py: loading, validation messages, env overrides, aliases, defaults."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from pgwarden.core import config as config_module
from pgwarden.core.config import (
    DEFAULT_BIN_DIR,
    apply_env,
    dynamic_from_dict,
    load_config,
    parse_config,
    validate_file,
)
from pgwarden.core.config_model import Config, Credentials, HostPort
from pgwarden.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "etc" / "patroni-compat.yml"
EXAMPLE = ROOT / "etc" / "pgwarden.yml"

DELETE = object()  # marks a key to remove in `changed`


def base() -> dict[str, Any]:
    """The smallest valid document."""
    return {
        "scope": "demo",
        "name": "n1",
        "restapi": {"listen": "10.0.0.11:8008"},
        "etcd3": {"hosts": ["10.0.0.21:2379"]},
        "postgresql": {
            "listen": "10.0.0.11:5432",
            "data_dir": "/data",
            "authentication": {
                "superuser": {"username": "postgres", "password": "s"},
                "replication": {"username": "replicator", "password": "r"},
            },
        },
    }


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """base() with dotted keys set (sections created as needed) or removed (DELETE)."""
    doc = base()
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return doc


def parse(doc: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return parse_config(doc, env={} if env is None else env)


def first_error(doc: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, env={} if env is None else env)
    return str(e.value)


def leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(doc, dict) and doc:
        for k, v in doc.items():
            yield from leaves(v, path + (k,))
    else:
        yield path, doc


def lookup(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def write(tmp_path: Path, text: str, name: str = "c.yml") -> str:
    f = tmp_path / name
    f.write_text(text)
    return str(f)


# -- every validation rule, with its exact message --------------------------------------

RULES: list[tuple[str, dict[str, Any], str]] = [
    # scope / namespace / name
    ("scope-missing", {"scope": DELETE},
     "scope: is required: the cluster's name, the same on every node (or set PGWARDEN_SCOPE)"),
    ("scope-empty", {"scope": " "},
     "scope: must not be empty: the cluster's name, the same on every node (or set PGWARDEN_SCOPE)"),
    ("scope-not-string", {"scope": 1234}, "scope: must be a string, got 1234: quote it in the YAML"),
    ("scope-slash", {"scope": "a/b"},
     "scope: must not contain '/', got 'a/b': it becomes part of DCS key paths"),
    ("namespace-not-string", {"namespace": 5}, "namespace: must be a string, got 5: quote it in the YAML"),
    ("name-missing", {"name": DELETE},
     "name: is required: this node's name, unique in the cluster (or set PGWARDEN_NAME)"),
    ("name-empty", {"name": ""},
     "name: must not be empty: this node's name, unique in the cluster (or set PGWARDEN_NAME)"),
    ("name-not-string", {"name": ["a"]}, "name: must be a string, got a list"),
    ("name-slash", {"name": "n/1"},
     "name: must not contain '/', got 'n/1': it becomes part of DCS key paths"),
    # restapi
    ("restapi-not-mapping", {"restapi": ["x"]}, "restapi: must be a mapping of keys, got a list"),
    ("restapi-missing", {"restapi": DELETE},
     "restapi.listen: is required: the host:port the REST API listens on, e.g. '0.0.0.0:8008'"),
    ("restapi-listen-missing", {"restapi.listen": DELETE},
     "restapi.listen: is required: the host:port the REST API listens on, e.g. '0.0.0.0:8008'"),
    ("restapi-listen-no-port", {"restapi.listen": "8008x"}, "restapi.listen: expected host:port, got '8008x'"),
    ("restapi-listen-int", {"restapi.listen": 8008}, "restapi.listen: expected host:port, got 8008"),
    ("restapi-listen-bad-port", {"restapi.listen": "h:80a"}, "restapi.listen: expected host:port, got 'h:80a'"),
    ("restapi-listen-port-high", {"restapi.listen": "h:70000"},
     "restapi.listen: port must be between 1 and 65535, got 70000"),
    ("restapi-listen-port-zero", {"restapi.listen": "h:0"},
     "restapi.listen: port must be between 1 and 65535, got 0"),
    ("restapi-listen-two-hosts", {"restapi.listen": "a,b:8008"},
     "restapi.listen: expected host:port, got 'a,b:8008'"),
    ("restapi-connect-default-wildcard", {"restapi.listen": "0.0.0.0:8008"},
     "restapi.connect_address: is required when restapi.listen is a wildcard ('0.0.0.0:8008'): "
     "set the address other nodes use to reach this one, e.g. '10.0.0.11:8008'"),
    ("restapi-connect-wildcard", {"restapi.connect_address": "*:8008"},
     "restapi.connect_address: must be an address other nodes can reach, got '*:8008': "
     "use this host's IP address or DNS name"),
    ("restapi-connect-bad", {"restapi.connect_address": "10.0.0.11"},
     "restapi.connect_address: expected host:port, got '10.0.0.11'"),
    ("restapi-auth-not-mapping", {"restapi.authentication": "u:p"},
     "restapi.authentication: must be a mapping of keys, got 'u:p'"),
    ("restapi-auth-half", {"restapi.authentication": {"username": "u"}},
     "restapi.authentication: set both username and password, or neither"),
    ("restapi-auth-password-int", {"restapi.authentication": {"username": "u", "password": 1234}},
     "restapi.authentication.password: must be a string, got 1234: quote it in the YAML"),
    ("restapi-allowlist-string", {"restapi.allowlist": "10.0.0.0/24"},
     "restapi.allowlist: must be a list of strings (an IP, a network or a host name each), got '10.0.0.0/24'"),
    ("restapi-allowlist-item-int", {"restapi.allowlist": ["10.0.0.1", 7]},
     "restapi.allowlist[1]: must be a string (an IP, a network or a host name), got 7"),
    ("restapi-allowlist-bad-network", {"restapi.allowlist": ["10.0.0.0/33"]},
     "restapi.allowlist[0]: expected an IP address, a network like '10.0.0.0/24' or a host name, "
     "got '10.0.0.0/33'"),
    ("restapi-allowlist-bad-ip", {"restapi.allowlist": ["10.0.0.300"]},
     "restapi.allowlist[0]: expected an IP address, a network like '10.0.0.0/24' or a host name, "
     "got '10.0.0.300'"),
    ("restapi-allowlist-bad-name", {"restapi.allowlist": ["db 1.example"]},
     "restapi.allowlist[0]: expected an IP address, a network like '10.0.0.0/24' or a host name, "
     "got 'db 1.example'"),
    ("restapi-allowlist-include-members-word", {"restapi.allowlist_include_members": "maybe"},
     "restapi.allowlist_include_members: must be true or false, got 'maybe'"),
    ("restapi-certfile-not-string", {"restapi.certfile": ["a.pem"]},
     "restapi.certfile: must be a string, got a list"),
    ("restapi-keyfile-password-int", {"restapi.certfile": "/c.pem", "restapi.keyfile_password": 1234},
     "restapi.keyfile_password: must be a string, got 1234: quote it in the YAML"),
    ("restapi-keyfile-without-certfile", {"restapi.keyfile": "/k.pem"},
     "restapi.keyfile: is set but restapi.certfile is not: set certfile to serve https, or remove keyfile"),
    ("restapi-verify-client-bad", {"restapi.verify_client": "always"},
     "restapi.verify_client: must be none, optional or required, got 'always'"),
    ("restapi-verify-client-bool", {"restapi.verify_client": True},
     "restapi.verify_client: must be none, optional or required, got true"),
    ("restapi-verify-client-no-tls", {"restapi.verify_client": "required"},
     "restapi.verify_client: required needs restapi.certfile and restapi.cafile: client certificates "
     "are checked over https against the CA in cafile"),
    ("restapi-verify-client-no-ca", {"restapi.verify_client": "optional", "restapi.certfile": "/c.pem"},
     "restapi.verify_client: optional needs restapi.cafile: client certificates are checked over https "
     "against the CA in cafile"),
    # DCS
    ("etcd3-missing", {"etcd3": DELETE},
     "etcd3: is required: add an etcd3: section with hosts: [host:port, ...] (or set PGWARDEN_ETCD3_HOSTS)"),
    ("etcd-v2", {"etcd3": DELETE, "etcd": {"hosts": "h:2379"}},
     "etcd: the etcd v2 API is not supported: use etcd3: with the same hosts (etcd serves the v3 API by default)"),
    ("zookeeper", {"etcd3": DELETE, "zookeeper": {"hosts": ["z:2181"]}},
     "zookeeper: only etcd3 is supported for now: replace the zookeeper: section with etcd3: hosts: [host:port, ...]"),
    ("consul", {"etcd3": DELETE, "consul": {"host": "c:8500"}},
     "consul: only etcd3 is supported for now: replace the consul: section with etcd3: hosts: [host:port, ...]"),
    ("etcd3-not-mapping", {"etcd3": "h:2379"}, "etcd3: must be a mapping of keys, got 'h:2379'"),
    ("etcd3-no-hosts", {"etcd3": {"protocol": "http"}},
     "etcd3.hosts: is required: the etcd endpoints as a list of host:port (or set PGWARDEN_ETCD3_HOSTS)"),
    ("etcd3-url", {"etcd3": {"url": "http://h:2379"}},
     "etcd3.url: is not supported yet: list the endpoints in etcd3.hosts instead"),
    ("etcd3-srv", {"etcd3": {"srv": "example.com"}},
     "etcd3.srv: is not supported yet: list the endpoints in etcd3.hosts instead"),
    ("etcd3-hosts-empty", {"etcd3.hosts": []}, "etcd3.hosts: must list at least one host:port"),
    ("etcd3-hosts-int", {"etcd3.hosts": 2379}, "etcd3.hosts: must be a list of host:port, got 2379"),
    ("etcd3-hosts-scheme", {"etcd3.hosts": ["a:2379", "https://b:2379"]},
     "etcd3.hosts[1]: expected host:port, got 'https://b:2379': drop the scheme and set etcd3.protocol: https for TLS"),
    ("etcd3-hosts-bad-port", {"etcd3.hosts": ["a:xx"]}, "etcd3.hosts[0]: expected host:port, got 'a:xx'"),
    ("etcd3-hosts-not-string", {"etcd3.hosts": [2379]}, "etcd3.hosts[0]: expected host:port, got 2379"),
    ("etcd3-hosts-string-bad", {"etcd3.hosts": "a:2379,b:99999"},
     "etcd3.hosts: port must be between 1 and 65535, got 99999"),
    ("etcd3-hosts-empty-host", {"etcd3.hosts": [":2379"]}, "etcd3.hosts[0]: expected host:port, got ':2379'"),
    ("etcd3-host-bad", {"etcd3": {"host": "h:x"}}, "etcd3.host: expected host:port, got 'h:x'"),
    # bootstrap.dcs
    ("bootstrap-not-mapping", {"bootstrap": "x"}, "bootstrap: must be a mapping of keys, got 'x'"),
    ("dcs-not-mapping", {"bootstrap.dcs": ["ttl"]}, "bootstrap.dcs: must be a mapping of keys, got a list"),
    ("ttl-abc", {"bootstrap.dcs.ttl": "abc"}, "bootstrap.dcs.ttl: must be an integer >= 2, got 'abc'"),
    ("ttl-low", {"bootstrap.dcs.ttl": 1}, "bootstrap.dcs.ttl: must be an integer >= 2, got 1"),
    ("ttl-float", {"bootstrap.dcs.ttl": 2.5}, "bootstrap.dcs.ttl: must be an integer >= 2, got 2.5"),
    ("ttl-bool", {"bootstrap.dcs.ttl": True}, "bootstrap.dcs.ttl: must be an integer >= 2, got true"),
    ("loop-wait-zero", {"bootstrap.dcs.loop_wait": 0},
     "bootstrap.dcs.loop_wait: must be an integer >= 1, got 0"),
    ("retry-timeout-zero", {"bootstrap.dcs.retry_timeout": 0},
     "bootstrap.dcs.retry_timeout: must be an integer >= 1, got 0"),
    ("timing-rule", {"bootstrap.dcs": {"ttl": 20, "loop_wait": 10, "retry_timeout": 10}},
     "bootstrap.dcs: loop_wait + 2*retry_timeout must be <= ttl (10 + 2*10 = 30 > 20): "
     "lower loop_wait or retry_timeout, or raise ttl"),
    ("timing-rule-ttl-2", {"bootstrap.dcs": {"ttl": 2, "loop_wait": 1, "retry_timeout": 1}},
     "bootstrap.dcs: loop_wait + 2*retry_timeout must be <= ttl (1 + 2*1 = 3 > 2): "
     "lower loop_wait or retry_timeout, or raise ttl"),
    ("max-lag-negative", {"bootstrap.dcs.maximum_lag_on_failover": -1},
     "bootstrap.dcs.maximum_lag_on_failover: must be an integer >= 0, got -1"),
    ("primary-start-timeout", {"bootstrap.dcs.primary_start_timeout": "5m"},
     "bootstrap.dcs.primary_start_timeout: must be an integer >= 0, got '5m'"),
    ("master-start-timeout", {"bootstrap.dcs.master_start_timeout": -5},
     "bootstrap.dcs.master_start_timeout: must be an integer >= 0, got -5"),
    ("primary-stop-timeout", {"bootstrap.dcs.primary_stop_timeout": [1]},
     "bootstrap.dcs.primary_stop_timeout: must be an integer >= 0, got a list"),
    ("master-stop-timeout", {"bootstrap.dcs.master_stop_timeout": "x"},
     "bootstrap.dcs.master_stop_timeout: must be an integer >= 0, got 'x'"),
    ("check-timeline", {"bootstrap.dcs.check_timeline": "maybe"},
     "bootstrap.dcs.check_timeline: must be true or false, got 'maybe'"),
    ("failsafe-mode", {"bootstrap.dcs.failsafe_mode": 2},
     "bootstrap.dcs.failsafe_mode: must be true or false, got 2"),
    ("pause", {"bootstrap.dcs.pause": "paused"}, "bootstrap.dcs.pause: must be true or false, got 'paused'"),
    ("dcs-postgresql-not-mapping", {"bootstrap.dcs.postgresql": "x"},
     "bootstrap.dcs.postgresql: must be a mapping of keys, got 'x'"),
    ("use-slots", {"bootstrap.dcs.postgresql": {"use_slots": "sure"}},
     "bootstrap.dcs.postgresql.use_slots: must be true or false, got 'sure'"),
    ("use-pg-rewind", {"bootstrap.dcs.postgresql": {"use_pg_rewind": 3}},
     "bootstrap.dcs.postgresql.use_pg_rewind: must be true or false, got 3"),
    ("dcs-parameters-not-mapping", {"bootstrap.dcs.postgresql": {"parameters": ["a=1"]}},
     "bootstrap.dcs.postgresql.parameters: must be a mapping of keys, got a list"),
    ("dcs-parameter-list", {"bootstrap.dcs.postgresql": {"parameters": {"shared_preload_libraries": ["a", "b"]}}},
     "bootstrap.dcs.postgresql.parameters.shared_preload_libraries: must be a string, number or boolean, "
     "got a list: write lists as one comma-separated string"),
    # postgresql
    ("postgresql-missing", {"postgresql": DELETE},
     "postgresql: is required: at least listen, data_dir and authentication (superuser and replication users)"),
    ("postgresql-not-mapping", {"postgresql": "x"}, "postgresql: must be a mapping of keys, got 'x'"),
    ("pg-listen-missing", {"postgresql.listen": DELETE},
     "postgresql.listen: is required: the host[,host]:port PostgreSQL listens on, e.g. '0.0.0.0:5432'"),
    ("pg-listen-no-port", {"postgresql.listen": "10.0.0.11"},
     "postgresql.listen: expected host[,host]:port, got '10.0.0.11'"),
    ("pg-listen-empty-host", {"postgresql.listen": "a,,b:5432"},
     "postgresql.listen: expected host[,host]:port, got 'a,,b:5432'"),
    ("pg-listen-port", {"postgresql.listen": "a:65536"},
     "postgresql.listen: port must be between 1 and 65535, got 65536"),
    ("pg-connect-default-wildcard", {"postgresql.listen": "*:5432"},
     "postgresql.connect_address: is required when postgresql.listen is a wildcard ('*:5432'): "
     "set the address other nodes use to reach this one, e.g. '10.0.0.11:5432'"),
    ("pg-connect-wildcard", {"postgresql.connect_address": "0.0.0.0:5432"},
     "postgresql.connect_address: must be an address other nodes can reach, got '0.0.0.0:5432': "
     "use this host's IP address or DNS name"),
    ("pg-connect-bad", {"postgresql.connect_address": "h:p"},
     "postgresql.connect_address: expected host:port, got 'h:p'"),
    ("data-dir-missing", {"postgresql.data_dir": DELETE},
     "postgresql.data_dir: is required: the PostgreSQL data directory, e.g. /var/lib/postgresql/15/main"),
    ("data-dir-empty", {"postgresql.data_dir": ""},
     "postgresql.data_dir: must not be empty: the PostgreSQL data directory, e.g. /var/lib/postgresql/15/main"),
    ("bin-dir-not-string", {"postgresql.bin_dir": 15},
     "postgresql.bin_dir: must be a string, got 15: quote it in the YAML"),
    ("auth-not-mapping", {"postgresql.authentication": "x"},
     "postgresql.authentication: must be a mapping of keys, got 'x'"),
    ("superuser-missing", {"postgresql.authentication.superuser": DELETE},
     "postgresql.authentication.superuser.username: is required: the superuser role's name "
     "(or set PGWARDEN_SUPERUSER_USERNAME)"),
    ("superuser-not-mapping", {"postgresql.authentication.superuser": "postgres"},
     "postgresql.authentication.superuser: must be a mapping of keys, got 'postgres'"),
    ("superuser-password-int", {"postgresql.authentication.superuser.password": 1234},
     "postgresql.authentication.superuser.password: must be a string, got 1234: quote it in the YAML"),
    ("replication-username-missing", {"postgresql.authentication.replication.username": DELETE},
     "postgresql.authentication.replication.username: is required: the replication role's name "
     "(or set PGWARDEN_REPLICATION_USERNAME)"),
    ("rewind-without-username", {"postgresql.authentication.rewind": {"password": "x"}},
     "postgresql.authentication.rewind.username: is required: the rewind role's name "
     "(or set PGWARDEN_REWIND_USERNAME)"),
    ("parameters-not-mapping", {"postgresql.parameters": "max_connections=100"},
     "postgresql.parameters: must be a mapping of keys, got 'max_connections=100'"),
    ("parameter-mapping", {"postgresql.parameters": {"work_mem": {"a": 1}}},
     "postgresql.parameters.work_mem: must be a string, number or boolean, got a mapping: "
     "write lists as one comma-separated string"),
    ("pg-hba-not-list", {"postgresql.pg_hba": "local all all peer"},
     "postgresql.pg_hba: must be a list of strings (one pg_hba.conf line each), got 'local all all peer'"),
    ("pg-hba-item", {"postgresql.pg_hba": ["local all all peer", {"host": "all"}]},
     "postgresql.pg_hba[1]: must be a string (one pg_hba.conf line), got a mapping"),
    ("use-unix-socket", {"postgresql.use_unix_socket": "socket"},
     "postgresql.use_unix_socket: must be true or false, got 'socket'"),
    ("pgpass", {"postgresql.pgpass": True}, "postgresql.pgpass: must be a string, got true: quote it in the YAML"),
    # postgresql callbacks
    ("callbacks-not-mapping", {"postgresql.callbacks": ["/bin/true"]},
     "postgresql.callbacks: must be a mapping of keys, got a list"),
    ("callbacks-unknown", {"postgresql.callbacks": {"on_promote": "/bin/true"}},
     "postgresql.callbacks.on_promote: is not a callback: use on_start, on_stop, on_restart, "
     "on_reload or on_role_change"),
    ("callbacks-pre-promote-misplaced", {"postgresql.callbacks": {"pre_promote": "/bin/true"}},
     "postgresql.callbacks.pre_promote: is not a callback: pre_promote goes directly under "
     "postgresql (postgresql.pre_promote)"),
    ("callbacks-empty", {"postgresql.callbacks": {"on_start": " "}},
     "postgresql.callbacks.on_start: must not be empty: give the program to run, e.g. "
     "'/usr/local/bin/callback.sh'"),
    ("callbacks-empty-list", {"postgresql.callbacks": {"on_stop": []}},
     "postgresql.callbacks.on_stop: must not be empty: give the program to run, e.g. "
     "'/usr/local/bin/callback.sh'"),
    ("callbacks-quotes", {"postgresql.callbacks": {"on_start": "/bin/true 'x"}},
     "postgresql.callbacks.on_start: cannot split \"/bin/true 'x\" into words "
     "(No closing quotation): check its quotes"),
    ("callbacks-not-command", {"postgresql.callbacks": {"on_reload": 5}},
     "postgresql.callbacks.on_reload: must be a command (a string or a list of strings), got 5"),
    ("callbacks-list-item", {"postgresql.callbacks": {"on_restart": ["/bin/true", 1]}},
     "postgresql.callbacks.on_restart[1]: must be a string, got 1"),
    ("callbacks-absent", {"postgresql.callbacks": {"on_role_change": "/nonexistent/cb.sh x"}},
     "postgresql.callbacks.on_role_change: /nonexistent/cb.sh does not exist: install the "
     "script or fix the path"),
    ("callbacks-not-in-path", {"postgresql.callbacks": {"on_start": "pgwarden-no-such-cb"}},
     "postgresql.callbacks.on_start: 'pgwarden-no-such-cb' is not found in PATH: install it "
     "or give its absolute path"),
    ("callbacks-directory", {"postgresql.callbacks": {"on_start": "/"}},
     "postgresql.callbacks.on_start: / is a directory, not a program"),
    ("callbacks-not-executable", {"postgresql.callbacks": {"on_start": "/etc/passwd"}},
     "postgresql.callbacks.on_start: /etc/passwd is not executable: chmod +x it"),
    ("pre-promote-absent", {"postgresql.pre_promote": "/nonexistent/fence.sh"},
     "postgresql.pre_promote: /nonexistent/fence.sh does not exist: install the script or fix "
     "the path"),
    ("pre-promote-empty", {"postgresql.pre_promote": ""},
     "postgresql.pre_promote: must not be empty: give the program to run, e.g. "
     "'/usr/local/bin/callback.sh'"),
    ("pre-promote-mapping", {"postgresql.pre_promote": {"cmd": "/bin/true"}},
     "postgresql.pre_promote: must be a command (a string or a list of strings), got a mapping"),
    ("callback-timeout-zero", {"postgresql.callback_timeout": 0},
     "postgresql.callback_timeout: must be a number of seconds > 0, got 0"),
    ("callback-timeout-negative", {"postgresql.callback_timeout": -5},
     "postgresql.callback_timeout: must be a number of seconds > 0, got -5"),
    ("callback-timeout-bool", {"postgresql.callback_timeout": True},
     "postgresql.callback_timeout: must be a number of seconds > 0, got true"),
    ("callback-timeout-text", {"postgresql.callback_timeout": "30s"},
     "postgresql.callback_timeout: must be a number of seconds > 0, got '30s'"),
    # watchdog
    ("watchdog-not-mapping", {"watchdog": "required"}, "watchdog: must be a mapping of keys, got 'required'"),
    ("watchdog-mode", {"watchdog.mode": "sometimes"},
     "watchdog.mode: must be off, automatic or required, got 'sometimes'"),
    ("watchdog-mode-int", {"watchdog.mode": 1}, "watchdog.mode: must be off, automatic or required, got 1"),
    ("watchdog-device", {"watchdog.device": 0}, "watchdog.device: must be a string, got 0: quote it in the YAML"),
    ("safety-margin-low", {"watchdog.safety_margin": -2},
     "watchdog.safety_margin: must be an integer >= -1, got -2"),
    ("safety-margin-type", {"watchdog.safety_margin": "five"},
     "watchdog.safety_margin: must be an integer >= -1, got 'five'"),
    ("safety-margin-ttl", {"watchdog.safety_margin": 30},
     "watchdog.safety_margin: must be less than bootstrap.dcs.ttl (30), got 30: "
     "the watchdog timeout is ttl - safety_margin"),
    ("safety-margin-bootstrap-ttl", {"bootstrap.dcs.ttl": 40, "watchdog.safety_margin": 41},
     "watchdog.safety_margin: must be less than bootstrap.dcs.ttl (40), got 41: "
     "the watchdog timeout is ttl - safety_margin"),
    # tags
    ("tags-not-mapping", {"tags": ["nofailover"]}, "tags: must be a mapping of keys, got a list"),
    ("tag-nofailover", {"tags.nofailover": "maybe"}, "tags.nofailover: must be true or false, got 'maybe'"),
    ("tag-noloadbalance", {"tags.noloadbalance": 5}, "tags.noloadbalance: must be true or false, got 5"),
    ("tag-clonefrom", {"tags.clonefrom": "x"}, "tags.clonefrom: must be true or false, got 'x'"),
    ("tag-nosync", {"tags.nosync": []}, "tags.nosync: must be true or false, got a list"),
    ("tag-nostream", {"tags.nostream": "y"}, "tags.nostream: must be true or false, got 'y'"),
    ("tag-failover-priority", {"tags.failover_priority": -1},
     "tags.failover_priority: must be an integer >= 0, got -1"),
    ("tag-sync-priority", {"tags.sync_priority": "high"},
     "tags.sync_priority: must be an integer >= 0, got 'high'"),
    ("tag-replicatefrom", {"tags.replicatefrom": 2}, "tags.replicatefrom: must be a string, got 2: quote it in the YAML"),
    # log
    ("log-not-mapping", {"log": "DEBUG"}, "log: must be a mapping of keys, got 'DEBUG'"),
    ("log-level", {"log.level": "LOUD"},
     "log.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
    ("log-level-int", {"log.level": 10},
     "log.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 10"),
    # vip
    ("vip-not-mapping", {"vip": "10.0.0.10"}, "vip: must be a mapping of keys, got '10.0.0.10'"),
    ("vip-address-missing", {"vip": {"interface": "eth0"}},
     "vip.address: is required: the floating IPv4 address, e.g. '10.0.0.10/24'"),
    ("vip-interface-missing", {"vip": {"address": "10.0.0.10/24"}},
     "vip.interface: is required: the network interface that carries the address, e.g. 'eth0'"),
    ("vip-interface-type", {"vip": {"address": "10.0.0.10/24", "interface": 0}},
     "vip.interface: must be a string, got 0: quote it in the YAML"),
    ("vip-address-bad", {"vip": {"address": "10.0.0.300", "interface": "eth0"}},
     "vip.address: expected an IPv4 address like '10.0.0.10/24', got '10.0.0.300'"),
    ("vip-address-type", {"vip": {"address": 10, "interface": "eth0"}},
     "vip.address: must be a string, got 10: quote it in the YAML"),
    ("vip-ipv6", {"vip": {"address": "fd00::10/64", "interface": "eth0"}},
     "vip.address: must be an IPv4 address (IPv6 is not supported yet), got 'fd00::10/64'"),
    ("vip-prefixlen-high", {"vip": {"address": "10.0.0.10", "prefixlen": 33, "interface": "eth0"}},
     "vip.prefixlen: must be an integer between 1 and 32, got 33"),
    ("vip-prefixlen-zero", {"vip": {"address": "10.0.0.10", "prefixlen": 0, "interface": "eth0"}},
     "vip.prefixlen: must be an integer between 1 and 32, got 0"),
    ("vip-prefixlen-type", {"vip": {"address": "10.0.0.10", "prefixlen": "/24", "interface": "eth0"}},
     "vip.prefixlen: must be an integer between 1 and 32, got '/24'"),
    ("vip-prefixlen-conflict", {"vip": {"address": "10.0.0.10/24", "prefixlen": 16, "interface": "eth0"}},
     "vip.prefixlen: conflicts with the /24 in vip.address ('10.0.0.10/24'): give the prefix length once"),
    ("vip-network-address", {"vip": {"address": "10.0.0.0/24", "interface": "eth0"}},
     "vip.address: 10.0.0.0 is the network address of 10.0.0.0/24: pick a host address"),
    ("vip-broadcast-address", {"vip": {"address": "10.0.0.255", "prefixlen": 24, "interface": "eth0"}},
     "vip.address: 10.0.0.255 is the broadcast address of 10.0.0.0/24: pick a host address"),
    ("vip-own-restapi-address", {"vip": {"address": "10.0.0.11/24", "interface": "eth0"}},
     "vip.address: must differ from restapi.connect_address (10.0.0.11): the VIP moves between nodes; "
     "set restapi.connect_address to this node's own address"),
    ("vip-own-pg-address", {"postgresql.connect_address": "10.0.0.10:5432",
                            "vip": {"address": "10.0.0.10/24", "interface": "eth0"}},
     "vip.address: must differ from postgresql.connect_address (10.0.0.10): the VIP moves between nodes; "
     "set postgresql.connect_address to this node's own address"),
]


@pytest.mark.parametrize("changes,message", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_message(changes: dict[str, Any], message: str) -> None:
    assert first_error(changed(changes)) == message


@pytest.mark.parametrize("changes,message", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_is_the_only_problem(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    """Each rule produces exactly one message: no knock-on errors from one mistake."""
    assert validate_file(write(tmp_path, yaml.safe_dump(changed(changes))), env={}) == [message]


def test_error_carries_key_and_message() -> None:
    with pytest.raises(ConfigError) as e:
        parse(changed({"bootstrap.dcs.ttl": "abc"}))
    assert e.value.key == "bootstrap.dcs.ttl"
    assert e.value.message == "must be an integer >= 2, got 'abc'"


def test_top_level_must_be_mapping() -> None:
    assert first_error(["scope"]) == (
        "the configuration must be a mapping of keys at the top level, got a list"
    )


# -- first error vs. all errors ----------------------------------------------------------

MANY = {
    "scope": DELETE,
    "restapi.listen": "8008x",
    "bootstrap.dcs.ttl": "abc",
    "watchdog.mode": "sometimes",
    "log.level": "LOUD",
}
MANY_MESSAGES = [
    "scope: is required: the cluster's name, the same on every node (or set PGWARDEN_SCOPE)",
    "restapi.listen: expected host:port, got '8008x'",
    "bootstrap.dcs.ttl: must be an integer >= 2, got 'abc'",
    "watchdog.mode: must be off, automatic or required, got 'sometimes'",
    "log.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
]


def test_validate_file_returns_every_problem_in_document_order(tmp_path: Path) -> None:
    assert validate_file(write(tmp_path, yaml.safe_dump(changed(MANY))), env={}) == MANY_MESSAGES


def test_load_config_raises_the_first_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, yaml.safe_dump(changed(MANY))), env={})
    assert str(e.value) == MANY_MESSAGES[0]


def test_validate_file_empty_when_valid(tmp_path: Path) -> None:
    assert validate_file(write(tmp_path, yaml.safe_dump(base())), env={}) == []


def test_timing_rule_not_checked_when_a_value_is_invalid() -> None:
    """An invalid loop_wait is reported alone, not also as a timing violation."""
    doc = changed({"bootstrap.dcs": {"ttl": 5, "loop_wait": 0, "retry_timeout": 10}})
    assert [e for e in _all(doc)] == ["bootstrap.dcs.loop_wait: must be an integer >= 1, got 0"]


def test_safety_margin_not_compared_with_an_invalid_ttl() -> None:
    doc = changed({"bootstrap.dcs.ttl": "x", "watchdog.safety_margin": 40})
    assert _all(doc) == ["bootstrap.dcs.ttl: must be an integer >= 2, got 'x'"]


def _all(doc: dict[str, Any]) -> list[str]:
    from pgwarden.core import config as module

    problems = module._Problems()
    module._build(problems, doc, {}, None)
    return [str(e) for e in problems.errors]


# -- reading files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value) == "cannot read the file: No such file or directory"
    assert validate_file(path, env={}) == ["cannot read the file: No such file or directory"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert validate_file(str(tmp_path), env={}) == ["cannot read the file: Is a directory"]


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "scope: demo\nname: n1\n  restapi: x\n")
    [message] = validate_file(path, env={})
    assert message == "invalid YAML at line 3, column 10: mapping values are not allowed here"
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value) == message and "\n" not in message


def test_unclosed_quote_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "scope: 'demo\nname: n1\n")
    [message] = validate_file(path, env={})
    assert message.startswith("invalid YAML at line ") and "\n" not in message


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    """PyYAML would silently keep the second section and drop the first one's settings."""
    text = yaml.safe_dump(base()) + "postgresql:\n  data_dir: /other\n"
    path = write(tmp_path, text)
    line = text.count("\n", 0, text.rindex("postgresql:")) + 1
    assert validate_file(path, env={}) == [
        f"invalid YAML at line {line}, column 1: duplicate key 'postgresql': merge the two into one"
    ]


def test_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "creds: &su {username: postgres, password: s}\n"
        "scope: demo\nname: n1\nrestapi: {listen: '10.0.0.11:8008'}\n"
        "etcd3: {hosts: ['e:2379']}\n"
        "postgresql:\n  listen: 10.0.0.11:5432\n  data_dir: /d\n  authentication:\n"
        "    superuser: *su\n    replication:\n      <<: *su\n      username: replicator\n"
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.postgresql.replication == Credentials("replicator", "s")


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing\n")
    assert validate_file(path, env={}) == ["the file is empty: see etc/pgwarden.yml for an example"]


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_bytes(b"scope: \xff\n")
    [message] = validate_file(str(f), env={})
    assert message.startswith("cannot read the file: not UTF-8 text")


def test_load_config_records_path(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(base()))
    assert load_config(path, env={}).path == path


# -- the Patroni-style file and our example -------------------------------------------------

COMPAT_CALLBACK = "/usr/local/bin/patroni_callback.sh"  # named by the compat file
_REAL_PROGRAM = config_module._program



@pytest.fixture(autouse=True)
def compat_callback_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callback programs are checked at load time, and the compat file's script is not on
    this host: every test here sees it as installed (except where it says otherwise)."""
    def program(p: Any, name: str, key: str) -> str | None:
        return name if name == COMPAT_CALLBACK else _REAL_PROGRAM(p, name, key)

    monkeypatch.setattr(config_module, "_program", program)


def test_patroni_config_loads_unchanged() -> None:
    source = yaml.safe_load(COMPAT.read_text())
    cfg = load_config(str(COMPAT), env={})
    for path, value in leaves(source):
        assert lookup(cfg.raw, path) == value, path
    assert cfg.bootstrap_dcs.raw == source["bootstrap"]["dcs"]


def test_patroni_config_typed_values() -> None:
    cfg = load_config(str(COMPAT), env={})
    assert (cfg.scope, cfg.namespace, cfg.name) == ("batman", "/service/", "pg-node1")
    assert cfg.restapi.listen == HostPort("0.0.0.0", 8008)
    assert cfg.restapi.connect_address == HostPort("10.0.1.11", 8008)
    assert (cfg.restapi.username, cfg.restapi.password) == ("patroni", "rest-api-secret")
    assert cfg.etcd3_hosts == tuple(HostPort(f"10.0.1.2{i}", 2379) for i in (1, 2, 3))
    dcs = cfg.bootstrap_dcs
    assert (dcs.ttl, dcs.loop_wait, dcs.retry_timeout) == (30, 10, 10)
    assert dcs.primary_start_timeout == 300  # from master_start_timeout
    assert dcs.check_timeline and dcs.failsafe_mode and not dcs.pause
    assert dcs.use_slots and dcs.use_pg_rewind
    assert dcs.postgresql_parameters["wal_log_hints"] == "on"
    assert dcs.raw["synchronous_mode"] is False and "slots" in dcs.raw  # unknown keys kept
    pg = cfg.postgresql
    assert pg.listen == HostPort("0.0.0.0", 5432) and pg.listen_addresses == "0.0.0.0"
    assert pg.connect_address == HostPort("10.0.1.11", 5432)
    assert pg.data_dir == "/var/lib/postgresql/16/main"
    assert pg.bin_dir == "/usr/lib/postgresql/16/bin"
    assert pg.superuser == Credentials("postgres", "super-secret")
    assert pg.replication == Credentials("replicator", "repl-secret")
    assert pg.rewind == Credentials("rewind_user", "rewind-secret")
    assert pg.parameters["unix_socket_directories"] == "/var/run/postgresql"
    assert pg.pg_hba[0] == "local all all peer"
    assert pg.use_unix_socket and pg.pgpass == "/var/lib/postgresql/.pgpass_patroni"
    assert (cfg.watchdog.mode, cfg.watchdog.device, cfg.watchdog.safety_margin) == (
        "automatic", "/dev/watchdog", 5,
    )
    assert cfg.tags["failover_priority"] == 1 and not cfg.nofailover
    assert cfg.log_level == "INFO"
    assert cfg.vip is None


def test_example_config_loads() -> None:
    assert validate_file(str(EXAMPLE), env={}) == []
    cfg = load_config(str(EXAMPLE), env={})
    assert cfg.name == "pg2" and len(cfg.etcd3_hosts) == 3
    assert cfg.vip is not None and (cfg.vip.address, cfg.vip.prefixlen, cfg.vip.interface) == (
        "10.0.0.10", 24, "eth0",
    )
    assert cfg.watchdog.mode == "required"


@pytest.mark.parametrize("key,value", [
    ("ctl", {"insecure": True}),
    ("kubernetes", {"namespace": "default", "labels": {"app": "pg"}}),
    ("zookeeper", {"hosts": ["z:2181"]}),  # another DCS next to etcd3 is ignored
    ("citus", {"group": 0, "database": "citus"}),
    ("restapi.http_extra_headers", {"X-Frame-Options": "SAMEORIGIN"}),
    ("restapi.server_tokens", "minimal"),
    ("postgresql.callbacks", {"on_role_change": "/bin/true"}),
    ("postgresql.create_replica_methods", ["basebackup"]),
    ("postgresql.authentication.superuser.sslmode", "require"),
    ("bootstrap.initdb", [{"encoding": "UTF8"}, "data-checksums"]),
    ("bootstrap.users", {"admin": {"password": "x", "options": ["createdb"]}}),
    ("bootstrap.dcs.synchronous_mode", "quorum"),
    ("etcd3.protocol", "https"),
    ("log.dir", "/var/log/pgwarden"),
    ("tags.datacenter", "east"),
    ("watchdog.driver", "default"),
    ("something_new", {"a": 1}),
])
def test_unused_keys_load_and_are_kept(key: str, value: Any) -> None:
    cfg = parse(changed({key: value}))
    assert lookup(cfg.raw, tuple(key.split("."))) == value


# -- defaults -------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse(base())
    assert cfg.namespace == "/service/"
    assert cfg.restapi.connect_address == cfg.restapi.listen == HostPort("10.0.0.11", 8008)
    assert cfg.restapi.username is None and cfg.restapi.password is None
    assert cfg.postgresql.connect_address == HostPort("10.0.0.11", 5432)
    assert cfg.postgresql.bin_dir == DEFAULT_BIN_DIR == "/usr/lib/postgresql/15/bin"
    assert cfg.postgresql.parameters == {} and cfg.postgresql.pg_hba == ()
    assert not cfg.postgresql.use_unix_socket and cfg.postgresql.pgpass is None
    assert cfg.postgresql.rewind is None
    dcs = cfg.bootstrap_dcs
    assert (dcs.ttl, dcs.loop_wait, dcs.retry_timeout) == (30, 10, 10)
    assert dcs.maximum_lag_on_failover == 1048576
    assert (dcs.primary_start_timeout, dcs.primary_stop_timeout) == (300, 0)
    assert not (dcs.check_timeline or dcs.failsafe_mode or dcs.pause or dcs.use_pg_rewind)
    assert dcs.use_slots and dcs.postgresql_parameters == {} and dcs.raw == {}
    assert (cfg.watchdog.mode, cfg.watchdog.device, cfg.watchdog.safety_margin) == (
        "automatic", "/dev/watchdog", 5,
    )
    assert cfg.tags == {} and cfg.vip is None and cfg.log_level == "INFO" and cfg.path is None


def test_raw_has_defaults_filled_but_keeps_what_was_written() -> None:
    doc = changed({"postgresql.bin_dir": "", "bootstrap.dcs.master_start_timeout": 0,
                   "watchdog.mode": False})
    raw = parse(doc).raw
    assert raw["namespace"] == "/service/"
    assert raw["restapi"]["connect_address"] == "10.0.0.11:8008"
    assert raw["postgresql"]["connect_address"] == "10.0.0.11:5432"
    assert raw["postgresql"]["bin_dir"] == DEFAULT_BIN_DIR
    assert raw["watchdog"] == {"mode": False, "device": "/dev/watchdog", "safety_margin": 5}
    assert raw["tags"] == {} and raw["log"] == {"level": "INFO"}
    assert raw["bootstrap"]["dcs"] == {"master_start_timeout": 0}  # as given: it goes to /config


def test_parse_does_not_modify_its_input() -> None:
    doc = base()
    before = copy.deepcopy(doc)
    parse(doc, env={"PGWARDEN_NAME": "other"})
    assert doc == before


def test_empty_sections_are_defaults() -> None:
    cfg = parse(changed({"bootstrap": None, "watchdog": None, "tags": None, "log": None, "vip": None}))
    assert cfg.bootstrap_dcs.ttl == 30 and cfg.vip is None and cfg.tags == {}


# -- aliases and accepted forms -------------------------------------------------------------


@pytest.mark.parametrize("value,mode", [
    ("off", "off"), ("false", "off"), ("disable", "off"), ("disabled", "off"), (False, "off"),
    ("automatic", "automatic"), ("auto", "automatic"), ("AUTO", "automatic"), (True, "automatic"),
    ("required", "required"), ("require", "required"), (" Required ", "required"),
])
def test_watchdog_mode_aliases(value: Any, mode: str) -> None:
    assert parse(changed({"watchdog.mode": value})).watchdog.mode == mode


def test_watchdog_yaml_booleans(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(base()) + "watchdog:\n  mode: off\n")
    assert load_config(path, env={}).watchdog.mode == "off"


def test_safety_margin_minus_one() -> None:
    assert parse(changed({"watchdog.safety_margin": -1})).watchdog.safety_margin == -1


@pytest.mark.parametrize("ttl,margin", [(3, -1), (5, -1), (6, 5), (30, 5)])
def test_default_safety_margin_fits_short_ttl(ttl: int, margin: int) -> None:
    dcs = {"ttl": ttl, "loop_wait": 1, "retry_timeout": 1}
    assert parse(changed({"bootstrap.dcs": dcs})).watchdog.safety_margin == margin


def test_master_start_timeout_alias() -> None:
    cfg = parse(changed({"bootstrap.dcs.master_start_timeout": 0}))
    assert cfg.bootstrap_dcs.primary_start_timeout == 0


def test_primary_start_timeout_wins_over_master() -> None:
    cfg = parse(changed({"bootstrap.dcs.master_start_timeout": 0,
                         "bootstrap.dcs.primary_start_timeout": 60}))
    assert cfg.bootstrap_dcs.primary_start_timeout == 60


def test_master_stop_timeout_alias() -> None:
    assert parse(changed({"bootstrap.dcs.master_stop_timeout": 30})).bootstrap_dcs.primary_stop_timeout == 30


@pytest.mark.parametrize("value,expected", [
    ("30", 30), (" 45 ", 45), (30, 30),
])
def test_integers_from_strings(value: Any, expected: int) -> None:
    assert parse(changed({"bootstrap.dcs.ttl": value})).bootstrap_dcs.ttl == expected


@pytest.mark.parametrize("value,expected", [
    (True, True), ("on", True), ("Yes", True), ("true", True), ("1", True),
    (False, False), ("off", False), ("no", False), ("FALSE", False), ("0", False),
])
def test_booleans_from_strings(value: Any, expected: bool) -> None:
    assert parse(changed({"bootstrap.dcs.failsafe_mode": value})).bootstrap_dcs.failsafe_mode is expected


@pytest.mark.parametrize("level,expected", [
    ("debug", "DEBUG"), ("Info", "INFO"), ("WARN", "WARNING"), ("warning", "WARNING"),
    ("ERROR", "ERROR"), ("critical", "CRITICAL"),
])
def test_log_levels(level: str, expected: str) -> None:
    assert parse(changed({"log.level": level})).log_level == expected


def test_minimum_timings_accepted() -> None:
    dcs = parse(changed({"bootstrap.dcs": {"ttl": 3, "loop_wait": 1, "retry_timeout": 1}})).bootstrap_dcs
    assert (dcs.ttl, dcs.loop_wait, dcs.retry_timeout) == (3, 1, 1)


def test_timing_rule_boundary_is_allowed() -> None:
    dcs = parse(changed({"bootstrap.dcs": {"ttl": 20, "loop_wait": 4, "retry_timeout": 8}})).bootstrap_dcs
    assert dcs.loop_wait + 2 * dcs.retry_timeout == dcs.ttl


@pytest.mark.parametrize("value,expected", [
    (["a:2379", "b"], (HostPort("a", 2379), HostPort("b", 2379))),
    ("a:2379,b:2380", (HostPort("a", 2379), HostPort("b", 2380))),
    ("a:1, b:2 ,", (HostPort("a", 1), HostPort("b", 2))),
    (["[fd00::1]:2379", "[fd00::2]"], (HostPort("fd00::1", 2379), HostPort("fd00::2", 2379))),
])
def test_etcd3_hosts_forms(value: Any, expected: tuple[HostPort, ...]) -> None:
    assert parse(changed({"etcd3.hosts": value})).etcd3_hosts == expected


def test_etcd3_single_host() -> None:
    assert parse(changed({"etcd3": {"host": "e1"}})).etcd3_hosts == (HostPort("e1", 2379),)


def test_etcd3_hosts_win_over_host() -> None:
    cfg = parse(changed({"etcd3": {"host": "one:1", "hosts": ["two:2"]}}))
    assert cfg.etcd3_hosts == (HostPort("two", 2),)


def test_postgresql_listen_multiple_hosts() -> None:
    cfg = parse(changed({"postgresql.listen": "127.0.0.1, 10.0.0.11:5433"}))
    assert cfg.postgresql.listen_addresses == "127.0.0.1,10.0.0.11"
    assert cfg.postgresql.listen == HostPort("127.0.0.1", 5433)
    assert cfg.postgresql.connect_address == HostPort("127.0.0.1", 5433)


def test_postgresql_listen_ipv6() -> None:
    cfg = parse(changed({"postgresql.listen": "10.0.0.11,::1:5432"}))
    assert cfg.postgresql.listen_addresses == "10.0.0.11,::1"
    cfg = parse(changed({"postgresql.listen": "[fd00::11]:5432"}))
    assert cfg.postgresql.listen == HostPort("fd00::11", 5432)


def test_restapi_listen_all_interfaces_with_connect_address() -> None:
    cfg = parse(changed({"restapi.listen": ":8008", "restapi.connect_address": "n1.example:8008"}))
    assert cfg.restapi.listen == HostPort("", 8008)
    assert cfg.restapi.connect_address == HostPort("n1.example", 8008)


def test_restapi_tls_and_access_keys() -> None:
    cfg = parse(changed({"restapi.certfile": "/etc/ssl/api.crt", "restapi.keyfile": "/etc/ssl/api.key",
                         "restapi.keyfile_password": "pw", "restapi.cafile": "/etc/ssl/ca.crt",
                         "restapi.ciphers": "ECDHE+AESGCM", "restapi.verify_client": "Required",
                         "restapi.allowlist": ["10.0.0.0/24", " 10.0.1.7 ", "fd00::/64", "db1.example"],
                         "restapi.allowlist_include_members": "on"}))
    r = cfg.restapi
    assert (r.certfile, r.keyfile, r.keyfile_password, r.cafile, r.ciphers) == (
        "/etc/ssl/api.crt", "/etc/ssl/api.key", "pw", "/etc/ssl/ca.crt", "ECDHE+AESGCM")
    assert r.verify_client == "required" and r.scheme == "https"
    assert r.allowlist == ("10.0.0.0/24", "10.0.1.7", "fd00::/64", "db1.example")
    assert r.allowlist_include_members is True


def test_restapi_defaults_are_plain_http_and_open() -> None:
    r = parse(base()).restapi
    assert (r.certfile, r.verify_client, r.scheme, r.allowlist, r.allowlist_include_members) == (
        None, "none", "http", (), False)


def test_restapi_certificate_files_are_not_opened_when_the_config_loads() -> None:
    """They are read when the API worker starts, so a config can be validated on another machine."""
    assert parse(changed({"restapi.certfile": "/nonexistent/api.crt"})).restapi.scheme == "https"


def test_patroni_config_restapi_tls_keys() -> None:
    r = load_config(str(COMPAT), env={}).restapi
    assert (r.certfile, r.keyfile, r.cafile, r.verify_client) == (
        "/etc/patroni/ssl/server.crt", "/etc/patroni/ssl/server.key", "/etc/patroni/ssl/ca.crt", "optional")
    assert r.allowlist == ("10.0.1.0/24", "127.0.0.1") and r.allowlist_include_members is True


def test_explicit_connect_addresses() -> None:
    cfg = parse(changed({"restapi.listen": "0.0.0.0:8008", "restapi.connect_address": "10.0.0.11:8008",
                         "postgresql.listen": "*:5432", "postgresql.connect_address": "10.0.0.11:5432"}))
    assert cfg.postgresql.listen_addresses == "*"
    assert cfg.postgresql.connect_address == HostPort("10.0.0.11", 5432)


@pytest.mark.parametrize("section,expected", [
    ({"address": "10.0.0.10/24", "interface": "eth0"}, ("10.0.0.10", 24, "eth0")),
    ({"address": "10.0.0.10", "prefixlen": 24, "interface": "eth0"}, ("10.0.0.10", 24, "eth0")),
    ({"address": "10.0.0.10", "interface": "bond0"}, ("10.0.0.10", 32, "bond0")),
    ({"address": "10.0.0.10/24", "prefixlen": 24, "interface": "eth0"}, ("10.0.0.10", 24, "eth0")),
    ({"address": "10.0.0.10", "prefixlen": "24", "interface": "eth0"}, ("10.0.0.10", 24, "eth0")),
    ({"address": "192.168.1.1/31", "interface": "eth0"}, ("192.168.1.1", 31, "eth0")),
])
def test_vip_forms(section: dict[str, Any], expected: tuple[str, int, str]) -> None:
    vip = parse(changed({"vip": section})).vip
    assert vip is not None and (vip.address, vip.prefixlen, vip.interface) == expected


def test_tags_kept_as_written() -> None:
    tags = {"nofailover": "true", "clonefrom": True, "failover_priority": 2, "replicatefrom": "n2", "dc": 1}
    cfg = parse(changed({"tags": tags}))
    assert cfg.tags == tags and cfg.nofailover


# -- environment overrides ------------------------------------------------------------------

ENV_CASES: list[tuple[str, str, Any]] = [
    ("SCOPE", "envscope", lambda c: c.scope),
    ("NAMESPACE", "/pg/", lambda c: c.namespace),
    ("NAME", "envname", lambda c: c.name),
    ("RESTAPI_LISTEN", "10.0.0.99:9008", lambda c: str(c.restapi.listen)),
    ("RESTAPI_CONNECT_ADDRESS", "10.0.0.98:9008", lambda c: str(c.restapi.connect_address)),
    ("RESTAPI_USERNAME", "api", lambda c: c.restapi.username),
    ("RESTAPI_PASSWORD", "apipw", lambda c: c.restapi.password),
    ("RESTAPI_CERTFILE", "/env/api.crt", lambda c: c.restapi.certfile),
    ("RESTAPI_KEYFILE_PASSWORD", "keypw", lambda c: c.restapi.keyfile_password),
    ("RESTAPI_ALLOWLIST", "10.0.0.0/24", lambda c: ",".join(c.restapi.allowlist)),
    ("POSTGRESQL_LISTEN", "10.0.0.97:6432", lambda c: str(c.postgresql.listen)),
    ("POSTGRESQL_CONNECT_ADDRESS", "10.0.0.96:6432", lambda c: str(c.postgresql.connect_address)),
    ("POSTGRESQL_DATA_DIR", "/env/data", lambda c: c.postgresql.data_dir),
    ("POSTGRESQL_BIN_DIR", "/env/bin", lambda c: c.postgresql.bin_dir),
    ("POSTGRESQL_PGPASS", "/env/pgpass", lambda c: c.postgresql.pgpass),
    ("SUPERUSER_USERNAME", "admin", lambda c: c.postgresql.superuser.username),
    ("SUPERUSER_PASSWORD", "supw", lambda c: c.postgresql.superuser.password),
    ("REPLICATION_USERNAME", "repl", lambda c: c.postgresql.replication.username),
    ("REPLICATION_PASSWORD", "replpw", lambda c: c.postgresql.replication.password),
    ("REWIND_USERNAME", "rw", lambda c: c.postgresql.rewind.username),
    ("LOG_LEVEL", "debug", lambda c: c.log_level.lower()),
]


@pytest.mark.parametrize("prefix", ["PGWARDEN_", "PATRONI_"])
@pytest.mark.parametrize("suffix,value,get", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_env_override(prefix: str, suffix: str, value: str, get: Any) -> None:
    env = {prefix + suffix: value}
    if suffix.startswith("RESTAPI_") and suffix.endswith(("USERNAME", "PASSWORD")):
        env = {prefix + "RESTAPI_USERNAME": "u", prefix + "RESTAPI_PASSWORD": "p"} | env  # a pair
    cfg = parse(base(), env=env)
    assert get(cfg) == value


def test_env_restapi_auth_needs_both() -> None:
    assert first_error(base(), env={"PGWARDEN_RESTAPI_USERNAME": "u"}) == (
        "restapi.authentication: set both username and password, or neither"
    )


def test_pgwarden_prefix_wins() -> None:
    cfg = parse(base(), env={"PATRONI_NAME": "patroni-name", "PGWARDEN_NAME": "pgwarden-name"})
    assert cfg.name == "pgwarden-name"


@pytest.mark.parametrize("value", [
    "'e1:2379','e2:2379'", "e1:2379,e2:2379", "[e1:2379, e2:2379]", '"e1:2379", "e2:2379"',
])
def test_env_etcd3_hosts(value: str) -> None:
    cfg = parse(base(), env={"PATRONI_ETCD3_HOSTS": value})
    assert cfg.etcd3_hosts == (HostPort("e1", 2379), HostPort("e2", 2379))


def test_env_etcd3_extra_keys_go_to_raw() -> None:
    cfg = parse(base(), env={"PGWARDEN_ETCD3_PROTOCOL": "https", "PGWARDEN_ETCD3_USERNAME": "u",
                             "PGWARDEN_ETCD3_PASSWORD": "p", "PGWARDEN_ETCD3_CACERT": "/ca"})
    assert cfg.raw["etcd3"]["protocol"] == "https" and cfg.raw["etcd3"]["cacert"] == "/ca"


def test_env_applies_before_validation() -> None:
    """A file without the secrets or node name is complete once the environment supplies them."""
    doc = changed({"name": DELETE, "postgresql.authentication": DELETE, "etcd3": DELETE})
    env = {
        "PGWARDEN_NAME": "n3",
        "PATRONI_SUPERUSER_USERNAME": "postgres",
        "PATRONI_REPLICATION_USERNAME": "replicator",
        "PATRONI_REPLICATION_PASSWORD": "pw",
        "PATRONI_ETCD3_HOSTS": "e1:2379",
    }
    cfg = parse(doc, env=env)
    assert cfg.name == "n3" and cfg.postgresql.replication == Credentials("replicator", "pw")
    assert cfg.raw["postgresql"]["authentication"]["replication"]["password"] == "pw"


def test_env_values_are_validated() -> None:
    assert first_error(base(), env={"PGWARDEN_RESTAPI_LISTEN": "8008x"}) == (
        "restapi.listen: expected host:port, got '8008x'"
    )


def test_env_etcd3_replaces_another_dcs() -> None:
    doc = changed({"etcd3": DELETE, "zookeeper": {"hosts": ["z:2181"]}})
    assert parse(doc, env={"PGWARDEN_ETCD3_HOSTS": "e:2379"}).etcd3_hosts == (HostPort("e", 2379),)


def test_empty_env_value_is_ignored() -> None:
    assert parse(base(), env={"PGWARDEN_NAME": "", "PATRONI_NAME": "fallback"}).name == "fallback"
    assert parse(base(), env={"PGWARDEN_NAME": ""}).name == "n1"


def test_env_does_not_replace_a_broken_section() -> None:
    """restapi: 'x' stays an error; the override must not hide it."""
    assert first_error(changed({"restapi": "x"}), env={"PGWARDEN_RESTAPI_LISTEN": "h:1"}) == (
        "restapi: must be a mapping of keys, got 'x'"
    )


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_NAME", "from-os")
    assert parse_config(base()).name == "from-os"
    assert parse_config(base(), env={}).name == "n1"


def test_apply_env_leaves_unrelated_variables() -> None:
    doc = apply_env(base(), {"PGWARDEN_UNKNOWN": "x", "HOME": "/root"})
    assert doc == base()


# -- dynamic_from_dict (bootstrap.dcs and the DCS `config` key) ------------------------------


def test_dynamic_defaults() -> None:
    dyn = dynamic_from_dict({})
    assert (dyn.ttl, dyn.loop_wait, dyn.retry_timeout, dyn.raw, dyn.corrections) == (30, 10, 10, {}, ())
    assert dynamic_from_dict(None).ttl == 30


def test_dynamic_keeps_unknown_keys() -> None:
    d = {"ttl": 40, "synchronous_mode": "quorum", "slots": {"s": {"type": "physical"}},
         "standby_cluster": None, "postgresql": {"use_slots": False, "pg_hba": ["local all all trust"]}}
    dyn = dynamic_from_dict(d)
    assert dyn.raw == d and dyn.raw is not d
    assert dyn.ttl == 40 and not dyn.use_slots


def test_dynamic_error_names_the_config_key() -> None:
    with pytest.raises(ConfigError) as e:
        dynamic_from_dict({"loop_wait": "x"})
    assert str(e.value) == "config.loop_wait: must be an integer >= 1, got 'x'"


def test_dynamic_error_prefix_can_be_chosen() -> None:
    with pytest.raises(ConfigError) as e:
        dynamic_from_dict({"postgresql": {"use_slots": "x"}}, key="bootstrap.dcs")
    assert str(e.value) == "bootstrap.dcs.postgresql.use_slots: must be true or false, got 'x'"


def test_dynamic_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as e:
        dynamic_from_dict(["ttl"])
    assert str(e.value) == "config: must be a mapping of keys, got a list"


def test_dynamic_timing_rule_is_strict_by_default() -> None:
    with pytest.raises(ConfigError) as e:
        dynamic_from_dict({"ttl": 20})
    assert str(e.value) == (
        "config: loop_wait + 2*retry_timeout must be <= ttl (10 + 2*10 = 30 > 20): "
        "lower loop_wait or retry_timeout, or raise ttl"
    )


@pytest.mark.parametrize("d,loop_wait,retry_timeout", [
    ({"ttl": 25}, 5, 10),                                   # loop_wait lowered first
    ({"ttl": 20}, 1, 9),                                    # not enough: ttl split, as Patroni does
    ({"ttl": 3, "loop_wait": 1, "retry_timeout": 5}, 1, 1),
])
def test_dynamic_repair(d: dict[str, Any], loop_wait: int, retry_timeout: int) -> None:
    dyn = dynamic_from_dict(d, repair=True)
    assert (dyn.loop_wait, dyn.retry_timeout) == (loop_wait, retry_timeout)
    assert dyn.loop_wait + 2 * dyn.retry_timeout <= dyn.ttl
    assert dyn.raw == d  # the DCS value itself is not rewritten


def test_dynamic_repair_describes_the_change() -> None:
    dyn = dynamic_from_dict({"ttl": 25}, repair=True)
    assert dyn.corrections == (
        "config: loop_wait + 2*retry_timeout must be <= ttl (10 + 2*10 = 30 > 25): "
        "using loop_wait=5 and retry_timeout=10",
    )


def test_dynamic_repair_impossible_with_ttl_2() -> None:
    with pytest.raises(ConfigError) as e:
        dynamic_from_dict({"ttl": 2}, repair=True)
    assert str(e.value) == (
        "config: loop_wait + 2*retry_timeout must be <= ttl (10 + 2*10 = 30 > 2): "
        "lower loop_wait or retry_timeout, or raise ttl"
    )


def test_bootstrap_dcs_is_never_repaired() -> None:
    """A local file is checked strictly: the user is there to fix it."""
    assert first_error(changed({"bootstrap.dcs.ttl": 25})).startswith("bootstrap.dcs: loop_wait")


# -- postgresql callbacks ---------------------------------------------------------------------


def executable(path: Path, text: str = "#!/bin/sh\n") -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_callbacks_default_to_none() -> None:
    pg = parse(base()).postgresql
    assert (pg.callbacks, pg.pre_promote, pg.callback_timeout) == ({}, None, 30.0)


def test_callback_commands_are_split_like_a_shell_without_one(tmp_path: Path) -> None:
    cb = executable(tmp_path / "cb.sh")
    pg = parse(changed({
        "postgresql.callbacks": {"on_start": f"{cb} --tag 'two words'",
                                 "on_role_change": [cb, "a b", "$HOME"],
                                 "on_stop": None},  # null: not configured
        "postgresql.pre_promote": f"{cb} fence",
        "postgresql.callback_timeout": "2.5",
    })).postgresql
    assert pg.callbacks == {"on_start": (cb, "--tag", "two words"),
                            "on_role_change": (cb, "a b", "$HOME")}  # no shell expands it
    assert pg.pre_promote == (cb, "fence")
    assert pg.callback_timeout == 2.5


def test_callback_program_name_is_resolved_through_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb = executable(tmp_path / "my-callback")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    pg = parse(changed({"postgresql.callbacks": {"on_reload": "my-callback x"}})).postgresql
    assert pg.callbacks == {"on_reload": (cb, "x")}


def test_callback_relative_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb = executable(tmp_path / "cb.sh")
    monkeypatch.chdir(tmp_path)
    pg = parse(changed({"postgresql.pre_promote": "./cb.sh"})).postgresql
    assert pg.pre_promote == (cb,)


def test_callback_problems_are_all_reported(tmp_path: Path) -> None:
    doc = changed({"postgresql.callbacks": {"on_start": "/nonexistent/a.sh", "on_bad": "x",
                                            "on_stop": ""},
                   "postgresql.pre_promote": "/nonexistent/b.sh",
                   "postgresql.callback_timeout": 0})
    assert [line.split(":")[0] for line in _all(doc)] == [
        "postgresql.callbacks.on_start", "postgresql.callbacks.on_bad",
        "postgresql.callbacks.on_stop", "postgresql.pre_promote", "postgresql.callback_timeout",
    ]


def test_patroni_config_names_its_missing_callback_script(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the script installed, the compat file fails on exactly its three callbacks."""
    monkeypatch.setattr(config_module, "_program", _REAL_PROGRAM)
    if Path(COMPAT_CALLBACK).exists():
        pytest.skip(f"{COMPAT_CALLBACK} exists on this host")
    message = f"{COMPAT_CALLBACK} does not exist: install the script or fix the path"
    assert validate_file(str(COMPAT), env={}) == [
        f"postgresql.callbacks.{name}: {message}"
        for name in ("on_start", "on_stop", "on_role_change")
    ]


def test_patroni_config_callbacks() -> None:
    pg = load_config(str(COMPAT), env={}).postgresql
    assert pg.callbacks == {name: (COMPAT_CALLBACK,)
                            for name in ("on_start", "on_stop", "on_role_change")}
