"""The command line: global options, then one command with its own options.

Global options go before the command, as with patronictl (`pgwardenctl -c FILE list`);
their long forms are also accepted after it (`pgwardenctl list --scope demo`). The short
forms -c/-d only exist before the command, because `query` has its own -c and -d.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from pgwarden.core.version import __version__
from pgwarden.ctl import (
    cmd_edit_config,
    cmd_flush,
    cmd_list,
    cmd_member_actions,
    cmd_pause,
    cmd_query,
    cmd_remove,
    cmd_show,
    cmd_switchover,
    cmd_version,
)
from pgwarden.ctl.errors import UsageError
from pgwarden.ctl.options import positive_seconds
from pgwarden.ctl.settings import Overrides

COMMANDS = (cmd_list, cmd_switchover, cmd_member_actions, cmd_flush, cmd_pause, cmd_edit_config,
            cmd_show, cmd_remove, cmd_query, cmd_version)

EPILOG = """exit status: 0 success; 1 the operation failed, was refused or declined; 2 usage error
(arguments, config file or input), nothing done; 3 accepted but still in progress when
waiting stopped; 130 interrupted."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised, printed by main) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _global_options(p: argparse.ArgumentParser, short: bool) -> None:
    """The same options for the top level (with short forms) and each command (long only).

    Per command the defaults are SUPPRESS, so a value given before the command is not
    overwritten by the command parser's default.
    """
    default = None if short else argparse.SUPPRESS

    def flags(*names: str) -> list[str]:
        return [n for n in names if short or n.startswith("--")]

    p.add_argument(*flags("--config-file", "-c"), dest="config_file", metavar="FILE", default=default,
                   help="agent or patronictl YAML config (env PGWARDENCTL_CONFIG_FILE or PATRONICTL_CONFIG_FILE; "
                        "default ~/.config/pgwarden/pgwardenctl.yaml, then ~/.config/patroni/patronictl.yaml)")
    p.add_argument(*flags("--dcs-url", "--dcs", "-d"), dest="dcs_url", metavar="URL", default=default,
                   help="etcd3://HOST:PORT[,HOST:PORT]/NAMESPACE (env DCS_URL); overrides the config's etcd3 hosts")
    p.add_argument(*flags("--scope"), dest="scope", default=default,
                   help="the cluster's name, when no CLUSTER argument is given")
    p.add_argument(*flags("--namespace"), dest="namespace", default=default,
                   help="the DCS namespace (default /service/)")
    p.add_argument(*flags("--dcs-timeout"), dest="dcs_timeout", type=positive_seconds, metavar="SECONDS",
                   default=default, help="deadline of each DCS call (default 5)")
    p.add_argument(*flags("--insecure", "-k"), dest="insecure", action="store_true", default=default or False,
                   help="do not verify the REST APIs' TLS certificates")


def build_parser() -> Parser:
    parser = Parser(prog="pgwardenctl", epilog=EPILOG,
                    description="Operate a pgwarden (or Patroni 4) cluster: read the DCS, act through the REST APIs.")
    _global_options(parser, short=True)
    parser.add_argument("--version", action="version", version=f"pgwardenctl version {__version__}")
    common = Parser(add_help=False)
    _global_options(common, short=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.register(sub, [common])
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if not getattr(args, "command", None):
        raise UsageError("no command given (see `pgwardenctl --help`)")
    return args


def overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        config_file=getattr(args, "config_file", None),
        dcs_url=getattr(args, "dcs_url", None),
        scope=getattr(args, "scope", None),
        namespace=getattr(args, "namespace", None),
        insecure=bool(getattr(args, "insecure", False)),
        dcs_timeout=getattr(args, "dcs_timeout", None),
    )
