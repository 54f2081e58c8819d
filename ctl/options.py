"""Option helpers shared by the commands' argument parsers (patronictl's spellings)."""
from __future__ import annotations

import argparse

from pgwarden.ctl.output import FORMATS
from pgwarden.ctl.selection import ROLES


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {text!r}")
    return value


def add_cluster_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    if required:
        p.add_argument("cluster_name", metavar="CLUSTER", help="the cluster's name (scope)")
    else:
        p.add_argument("cluster_name", metavar="CLUSTER", nargs="?", default=None,
                       help="the cluster's name (default: --scope or the config file's scope)")


def add_format(p: argparse.ArgumentParser, default: str = "pretty", short: bool = True) -> None:
    flags = ["--format", "-f"] if short else ["--format"]
    p.add_argument(*flags, dest="fmt", choices=FORMATS, default=default,
                   help=f"output format (default: {default})")


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="do not ask for confirmation at any point")


def add_role(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--role", "-r", choices=ROLES, default=default, help=what)


def add_wait(p: argparse.ArgumentParser, what: str, default_timeout: float) -> None:
    p.add_argument("--wait", action="store_true", help=f"wait until {what}, printing each change")
    p.add_argument("--wait-timeout", type=positive_seconds, default=default_timeout, metavar="SECONDS",
                   help=f"with --wait, give up waiting after this long (exit status 3; default {default_timeout:g})")
