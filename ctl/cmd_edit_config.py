"""`edit-config`: change the dynamic configuration (the `config` key) with compare-and-swap.

The change comes from --replace, --apply, --set/--pg (in that order), or else the editor.
The diff is shown, the operator confirms, and the key is written only if its version is
still the one we read: a concurrent change makes the command fail instead of being lost.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from pgwarden.core.config import dynamic_from_dict
from pgwarden.core.errors import ConfigError
from pgwarden.ctl.config_edit import apply_pairs, colour_diff_line, merge, parse_yaml_document, pg_pairs, unified_diff
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.dcs_access import dcs_call
from pgwarden.ctl.editor import edit_text
from pgwarden.ctl.errors import CtlError, UsageError
from pgwarden.ctl.options import add_cluster_arg, add_force
from pgwarden.ctl.output import yaml_text


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("edit-config", parents=parents, help="change the dynamic configuration",
                       description="Edit the config key in $EDITOR, or change it with --set/--pg/--apply/--replace.")
    add_cluster_arg(p)
    p.add_argument("--quiet", "-q", action="store_true", help="do not show the changes")
    p.add_argument("--set", "-s", dest="kvpairs", action="append", default=[], metavar="KEY=VALUE",
                   help="set a dotted key to a YAML value (empty or null removes it); repeatable")
    p.add_argument("--pg", "-p", dest="pgkvpairs", action="append", default=[], metavar="PARAM=VALUE",
                   help="set a PostgreSQL parameter (postgresql.parameters.PARAM); repeatable")
    p.add_argument("--apply", dest="apply_filename", metavar="FILE",
                   help="merge this YAML file into the config (- for stdin)")
    p.add_argument("--replace", dest="replace_filename", metavar="FILE",
                   help="replace the whole config with this YAML file (- for stdin)")
    add_force(p)
    p.set_defaults(func=run_edit_config)


def _read_file(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        with open(name, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None


def changed_config(ctx: Ctx, args: argparse.Namespace, cluster: str, current: dict[str, Any]) -> dict[str, Any]:
    """The config after the requested changes (or the editor's result)."""
    if args.replace_filename == "-" and args.apply_filename == "-":
        raise UsageError("--apply and --replace cannot both read stdin")
    data = current
    requested = False
    if args.replace_filename:
        data = parse_yaml_document(_read_file(args.replace_filename), args.replace_filename)
        requested = True
    if args.apply_filename:
        data = merge(data, parse_yaml_document(_read_file(args.apply_filename), args.apply_filename))
        requested = True
    if args.kvpairs or args.pgkvpairs:
        data = apply_pairs(data, list(args.kvpairs) + pg_pairs(args.pgkvpairs))
        requested = True
    if not requested:
        data = parse_yaml_document(edit_text(yaml_text(current), cluster, ctx.env), "the edited config")
    return data


def _check(data: dict[str, Any]) -> list[str]:
    """Refuse values no agent could use; return the timing corrections agents will make."""
    try:
        return list(dynamic_from_dict(data, key="config", repair=True).corrections)
    except ConfigError as e:
        raise UsageError(f"the new config is invalid: {e}: nothing written") from None


def run_edit_config(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    if view.config.version == 0:
        raise CtlError(f"The config key does not exist in the cluster {cluster}")
    current = view.config.value if isinstance(view.config.value, dict) else {}
    data = changed_config(ctx, args, cluster, current)
    if data == current:
        if not args.quiet:
            ctx.say("Not changed")
        return 0
    for correction in _check(data):
        ctx.warn(f"note: {correction}")
    if not args.quiet:
        colour = ctx.out.isatty()
        for line in unified_diff(yaml_text(current), yaml_text(data)):
            ctx.say(colour_diff_line(line) if colour else line)
    if "-" in (args.apply_filename, args.replace_filename) and not args.force:
        raise CtlError("Use --force option to apply changes read from stdin (it cannot also answer the question)")
    if not ctx.prompter.confirm("Apply these changes?"):
        raise CtlError("Aborted: the config was not changed")
    store = ctx.store(cluster)
    if not dcs_call("write the config key", store.set_config, data, view.config.version):
        raise CtlError("Config modification aborted due to concurrent changes: run edit-config again")
    ctx.say("Configuration changed")
    return 0
