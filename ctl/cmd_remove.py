"""`remove CLUSTER`: delete every key of the cluster from the DCS, after typed confirmations.

The same three safeguards as patronictl, and no --force on purpose: the cluster's name,
a typed sentence, and, while a leader holds the key, the leader's name.
"""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.ctl.cmd_list import print_members
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.dcs_access import dcs_call
from pgwarden.ctl.errors import CtlError
from pgwarden.ctl.options import add_format

AWARE = "Yes I am aware"


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("remove", parents=parents, help="delete a cluster's keys from the DCS",
                       description="Delete every key of the cluster (initialize, config, leader, members, ...). "
                                   "Stop its agents first, or they write their keys again.")
    p.add_argument("cluster_name", metavar="CLUSTER", help="the cluster to remove")
    add_format(p)
    p.set_defaults(func=run_remove, force=False)


def run_remove(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    store = ctx.store(cluster)
    keyed = (view.config, view.failover, view.sync, view.history, view.status, view.failsafe)
    if not (view.members or view.leader or view.initialize is not None or any(k.version for k in keyed)):
        raise CtlError(f"cluster {cluster} has no keys under {store.prefix}: nothing to remove")
    print_members(ctx, cluster, args.fmt, view=view)
    ask = ctx.prompter.ask
    if ask("Please confirm the cluster name to remove") != cluster:
        raise CtlError("Cluster names specified do not match")
    if ask(f'You are about to remove all information in DCS for {cluster}, please type: "{AWARE}"') != AWARE:
        raise CtlError(f'You did not exactly type "{AWARE}"')
    if view.leader and ask("This cluster currently is healthy. Please specify the leader name to continue") \
            != view.leader:
        raise CtlError("You did not specify the current leader of the cluster")
    dcs_call(f"delete cluster {cluster} from the DCS", store.delete_cluster)
    ctx.say(f"Removed every key of cluster {cluster} under {store.prefix}")
    return 0
