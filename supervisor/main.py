"""`pgwarden CONFIG.yml`: the agent. Also `--validate CONFIG.yml` and `state CONFIG.yml`."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import orjson

from pgwarden.core.errors import ConfigError
from pgwarden.core.version import __version__

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgwarden",
        description="High-availability PostgreSQL agent (one per host).",
        epilog="Commands: `pgwarden CONFIG.yml` runs the agent; `pgwarden state CONFIG.yml` "
               "dumps a running agent's shared state as JSON.")
    p.add_argument("args", nargs="+", metavar="[state] CONFIG.yml")
    p.add_argument("--validate", action="store_true", help="check the config file and exit")
    p.add_argument("--version", action="version", version=f"pgwarden {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    if len(ns.args) == 2 and ns.args[0] == "state":
        return dump_state(ns.args[1])
    if len(ns.args) != 1:
        print("pgwarden: expected one config file (or `state CONFIG.yml`)", file=sys.stderr)
        return 2
    path = ns.args[0]
    if ns.validate:
        return validate(path)
    from pgwarden.core.config import load_config

    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"pgwarden: invalid configuration {path}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s {cfg.name} %(name)s: %(message)s",
                        stream=sys.stderr)
    from pgwarden.supervisor.agent import Agent, AlreadyRunning

    try:
        agent = Agent(cfg)
    except AlreadyRunning as e:
        print(f"pgwarden: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pgwarden: cannot create the shared state: {e}", file=sys.stderr)
        return 1
    return agent.run()


def validate(path: str) -> int:
    from pgwarden.core.config import validate_file

    problems = validate_file(path)
    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    if not problems:
        print(f"{path}: valid")
    return 1 if problems else 0


def dump_state(path: str) -> int:
    from pgwarden.core.config import load_config
    from pgwarden.core.shm import SharedState, shm_path

    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"pgwarden: invalid configuration {path}: {e}", file=sys.stderr)
        return 2
    shm_file = shm_path(cfg.scope, cfg.name)
    if not os.path.exists(shm_file):
        print(f"pgwarden: no running agent for {cfg.scope}/{cfg.name} ({shm_file} not found)",
              file=sys.stderr)
        return 1
    state = SharedState.attach(shm_file)
    try:
        out = {n: {"pid": v.pid, "generation": v.generation, "heartbeat_age": round(v.age(), 3),
                   "torn": v.torn, "data": v.data} for n, v in state.read_all().items()}
    finally:
        state.close(unlink=False)
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
