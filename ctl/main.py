"""pgwardenctl: operate a pgwarden cluster (and a Patroni 4 one) from the command line.

Reads the DCS directly, like patronictl; actions go through the members' REST APIs
exactly as patronictl sends them (POST /switchover, /failover, /restart, /reload,
/reinitialize; PATCH /config for pause/resume; DELETE /switchover and /restart).

Exit status, for scripts:
  0    success (including "nothing to do", e.g. a config already as requested)
  1    the operation failed, was refused by the cluster, or was declined at a prompt;
       also an unreachable DCS or REST API
  2    usage error: bad arguments, config file or input file; nothing was done
  3    accepted, but still in progress when waiting stopped (--wait ran out of time, or
       the API answered that the switchover's outcome is not known yet): check again
  130  interrupted (Ctrl-C)

Every error is one line on stderr, starting with "pgwardenctl: ". Set PGWARDENCTL_DEBUG=1
to get the traceback of an unexpected error.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from pgwarden.ctl.args import overrides, parse
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, CtlError
from pgwarden.ctl.settings import Settings, load_settings


CtxFactory = Callable[[Settings, bool], Ctx]


def _default_ctx(settings: Settings, force: bool) -> Ctx:
    return Ctx(settings, force=force)


def run(argv: Sequence[str], make_ctx: CtxFactory = _default_ctx) -> int:
    """Parse, load the settings, run the command; errors propagate as exceptions."""
    args = parse(argv)
    settings = load_settings(overrides(args))
    ctx = make_ctx(settings, bool(getattr(args, "force", False)))
    try:
        return int(args.func(ctx, args))
    finally:
        ctx.close()


def main(argv: Sequence[str] | None = None, make_ctx: CtxFactory = _default_ctx) -> int:
    """The console script: every outcome becomes an exit status (see the module docstring)."""
    try:
        return run(sys.argv[1:] if argv is None else argv, make_ctx)
    except CtlError as e:
        _error(e.message)
        return e.code
    except KeyboardInterrupt:
        _error("interrupted (a request already sent goes on: check with `pgwardenctl list`)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pgwardenctl list | head`): nothing left to say to it.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except Exception as e:  # a bug must still be one line, not a traceback
        if os.environ.get("PGWARDENCTL_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (set PGWARDENCTL_DEBUG=1 for the traceback)")
        return EXIT_FAILED


def _error(message: str) -> None:
    try:
        sys.stderr.write(f"pgwardenctl: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
