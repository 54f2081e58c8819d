"""Where pgwardenctl finds the DCS and the cluster: --dcs-url, config files, the environment."""
from __future__ import annotations

from pathlib import Path

import pytest

from pgwarden.ctl.dcs_url import parse_dcs_url
from pgwarden.ctl.errors import UsageError
from pgwarden.ctl.settings import Overrides, load_settings


@pytest.mark.parametrize("url, hosts, namespace", [
    ("etcd3://10.0.0.1:2379/service", ("10.0.0.1:2379",), "/service/"),
    ("etcd3://a:1,b:2", ("a:1", "b:2"), None),
    ("10.0.0.1", ("10.0.0.1:2379",), None),
    ("etcd3://:2399", ("localhost:2399",), None),
    ("etcd3://[::1]:2379/ns/", ("[::1]:2379",), "/ns/"),
])
def test_dcs_urls_as_patronictl_writes_them(url: str, hosts: tuple[str, ...], namespace: str | None) -> None:
    parsed = parse_dcs_url(url)
    assert parsed.hosts == hosts and parsed.namespace == namespace


@pytest.mark.parametrize("url, words", [("consul://h:8500", "only etcd v3"), ("ftp://h", "unknown scheme"),
                                        ("etcd3://h:port", "not a number")])
def test_other_dcs_urls_are_usage_errors_that_say_why(url: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_dcs_url(url)


def _write(tmp: Path, text: str) -> str:
    path = tmp / "ctl.yml"
    path.write_text(text)
    return str(path)


def test_an_agent_config_gives_scope_namespace_hosts_and_api_auth(tmp_path: Path) -> None:
    path = _write(tmp_path, """
scope: demo
namespace: /pg/
name: n1
etcd3: {hosts: ["10.0.0.1:2379", "10.0.0.2"]}
restapi: {listen: 0.0.0.0:8008, authentication: {username: u, password: p}, cafile: /ca.pem}
postgresql: {data_dir: /x}
""")
    s = load_settings(Overrides(config_file=path), env={})
    assert (s.scope, s.namespace, s.etcd_hosts) == ("demo", "/pg/", ("10.0.0.1:2379", "10.0.0.2:2379"))
    assert s.api.auth == ("u", "p") and s.api.cacert == "/ca.pem" and not s.api.insecure


def test_the_ctl_section_wins_over_restapi_and_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, """
scope: demo
etcd3: {host: "10.0.0.1:2379"}
restapi: {authentication: {username: u, password: p}}
ctl: {authentication: {username: admin, password: secret}, cacert: /ctl-ca.pem, insecure: true}
""")
    s = load_settings(Overrides(config_file=path, dcs_url="etcd3://e:1/other", scope="prod"), env={})
    assert s.api.auth == ("admin", "secret") and s.api.cacert == "/ctl-ca.pem" and s.api.insecure
    assert s.etcd_hosts == ("e:1",) and s.namespace == "/other/" and s.scope == "prod"


def test_environment_overrides_apply_as_for_the_agent(tmp_path: Path) -> None:
    s = load_settings(Overrides(), env={"HOME": str(tmp_path), "PATRONI_SCOPE": "envscope",
                                        "PGWARDEN_ETCD3_HOSTS": "'h1:2379','h2:2379'",
                                        "DCS_URL": "etcd3://u:2379"})
    assert s.scope == "envscope" and s.etcd_hosts == ("u:2379",)


def test_patronictls_own_default_file_is_read_when_present(tmp_path: Path) -> None:
    cfg = tmp_path / ".config" / "patroni"
    cfg.mkdir(parents=True)
    (cfg / "patronictl.yaml").write_text("scope: fromdefault\netcd3: {hosts: 'h:2379'}\n")
    s = load_settings(Overrides(), env={"HOME": str(tmp_path)})
    assert s.scope == "fromdefault" and s.config_path == str(cfg / "patronictl.yaml")


@pytest.mark.parametrize("text, words", [
    ("scope: [", "invalid YAML at line 1"),
    ("- a", "top level must be a mapping"),
    ("etcd: {host: h}", "etcd v2 API is not supported"),
    ("etcd3: {hosts: h, protocol: https}", "TLS is not supported"),
    ("ctl: [1]", "ctl: must be a mapping"),
])
def test_config_file_problems_are_usage_errors(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        load_settings(Overrides(config_file=_write(tmp_path, text)), env={})


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the config file .*No such file"):
        load_settings(Overrides(config_file=str(tmp_path / "missing.yml")), env={})
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(Overrides(), env={"PATRONICTL_CONFIG_FILE": str(tmp_path / "missing.yml")})
