"""pgwardenctl's command line: patronictl's spellings, one-line usage errors with exit status 2."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctl_fakes import isolate_env, run_ctl
from pgwarden.ctl.args import overrides, parse
from pgwarden.ctl.errors import UsageError
from pgwarden.ctl.main import main


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_env(monkeypatch, tmp_path)


def test_global_options_before_the_command_with_patronictls_short_forms() -> None:
    args = parse(["-c", "/etc/x.yml", "-d", "etcd3://h:1", "-k", "list"])
    o = overrides(args)
    assert (o.config_file, o.dcs_url, o.insecure) == ("/etc/x.yml", "etcd3://h:1", True)


def test_long_global_options_are_also_accepted_after_the_command() -> None:
    o = overrides(parse(["list", "--scope", "demo", "--dcs-url", "etcd3://h:1", "--namespace", "/ns/"]))
    assert (o.scope, o.dcs_url, o.namespace) == ("demo", "etcd3://h:1", "/ns/")
    # a value given before the command is not reset by the command's own parser
    assert overrides(parse(["--scope", "demo", "list"])).scope == "demo"


def test_query_keeps_its_own_c_and_d() -> None:
    args = parse(["-d", "etcd3://h:1", "query", "-c", "select 1", "-d", "appdb", "-U", "me"])
    assert (args.command, args.dbname, args.username) == ("select 1", "appdb", "me")
    assert overrides(args).dcs_url == "etcd3://h:1"


def test_commands_with_a_required_cluster_name_take_members_after_it() -> None:
    args = parse(["restart", "demo", "n2", "n3", "--role", "replica", "--pending", "--force"])
    assert (args.cluster_name, args.member_names, args.role, args.pending, args.force) == \
        ("demo", ["n2", "n3"], "replica", True, True)
    flush = parse(["flush", "demo", "n2", "restart"])
    assert (flush.member_names, flush.target) == (["n2"], "restart")


def test_edit_config_collects_repeated_set_and_pg() -> None:
    args = parse(["edit-config", "-s", "loop_wait=5", "--set", "ttl=20", "-p", "work_mem=8MB", "--force"])
    assert args.kvpairs == ["loop_wait=5", "ttl=20"] and args.pgkvpairs == ["work_mem=8MB"]


@pytest.mark.parametrize("argv, words", [
    ([], "no command given"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["list", "--format", "xml"], "invalid choice: 'xml'"),
    (["restart"], "the following arguments are required: CLUSTER"),
    (["switchover", "--wait", "--wait-timeout", "-3"], "expected more than 0 seconds"),
    (["flush", "demo", "everything"], "invalid choice: 'everything'"),
])
def test_usage_errors_raise_one_line(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words) as info:
        parse(argv)
    assert "\n" not in info.value.message and "--help" in info.value.message


def test_main_prints_a_usage_error_as_one_line_and_exits_2(capsys: Any) -> None:
    assert main(["list", "--bogus"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "pgwardenctl: unrecognized arguments: --bogus (see `pgwardenctl --help`)\n"


def test_help_exits_0(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["switchover", "--help"])
    assert info.value.code == 0
    assert "--candidate" in capsys.readouterr().out


def test_without_any_dcs_the_error_says_how_to_name_one(capsys: Any) -> None:
    assert main(["--scope", "demo", "list"]) == 2
    assert capsys.readouterr().err == ("pgwardenctl: no DCS to read: pass --dcs-url etcd3://HOST:2379, "
                                       "or -c CONFIG with an etcd3: section\n")


def test_without_a_cluster_name_the_error_says_where_to_give_it(capsys: Any) -> None:
    assert main(["-d", "etcd3://h:1", "show-config"]) == 2
    assert "no cluster name: give it as an argument, with --scope" in capsys.readouterr().err


def test_role_and_member_together_are_a_usage_error(capsys: Any) -> None:
    r = run_ctl(["dsn", "--role", "replica", "--member", "n2"], capsys=capsys)
    assert r.code == 2 and r.err == "pgwardenctl: --role and --member are mutually exclusive options\n"


def test_an_unparsable_schedule_is_a_usage_error(capsys: Any) -> None:
    r = run_ctl(["switchover", "--scheduled", "tomorrow-ish", "--force"], capsys=capsys)
    assert r.code == 2 and "unable to parse scheduled timestamp (tomorrow-ish)" in r.err
    assert r.api.calls == []


def test_scheduled_times_are_iso_8601_and_a_time_without_zone_is_local() -> None:
    import datetime

    from pgwarden.ctl.schedule import parse_scheduled

    assert parse_scheduled(None) is None and parse_scheduled("now") is None and parse_scheduled("") is None
    assert parse_scheduled("2030-01-01T10:00Z") == datetime.datetime(2030, 1, 1, 10, tzinfo=datetime.UTC)
    assert parse_scheduled("2030-01-01 10:00+02:00").utcoffset() == datetime.timedelta(hours=2)
    local = parse_scheduled("2030-01-01T10:00")
    assert local is not None and local.tzinfo is not None and local.replace(tzinfo=None) == \
        datetime.datetime(2030, 1, 1, 10)
