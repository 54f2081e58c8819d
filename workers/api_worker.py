"""The api worker process: serve the REST API and publish the `api` section.

The HTTP server runs in its own threads and only reads the shared state; this process's
main thread just beats once a second and waits for SIGTERM.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

from pgwarden.core.errors import ConfigError
from pgwarden.workers.api_server import ApiServer
from pgwarden.workers.context import WorkerContext

BEAT_INTERVAL = 1.0
EXIT_CANNOT_LISTEN = 1


def run(ctx: WorkerContext) -> None:
    """Serve until SIGTERM. Raises SystemExit(1) if `restapi.listen` cannot be bound."""
    ctx.shm.claim(ctx.name)
    listen = ctx.config.restapi.listen
    try:
        server = ApiServer(ctx.config, ctx.shm)
    except OSError as e:
        ctx.log.error(
            "cannot listen for the REST API on %s: %s; free the port or change restapi.listen",
            listen, e.strerror or e,
        )
        raise SystemExit(EXIT_CANNOT_LISTEN) from None
    except ConfigError as e:  # restapi.certfile & co. cannot be loaded
        ctx.log.error("cannot serve the REST API over TLS: %s", e)
        raise SystemExit(EXIT_CANNOT_LISTEN) from None

    stopping = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        ctx.wakeups.poke(ctx.name)  # cut the current wait short

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.start()
        ctx.log.info("REST API listening on %s", server.url)
        # The first publish announces the address (a change: wake the supervisor). After
        # that only the request counter moves, which no one acts on: beat without a poke.
        # Operations go to the supervisor through this section (api_actions.RequestChannel):
        # every publish carries the open requests along with the worker's own fields.
        actions = getattr(server.app, "actions", None)
        if actions is not None:
            actions.wake_supervisor = lambda: ctx.wakeups.poke("supervisor")

        def publish(poke: bool = False) -> None:
            # url carries the scheme: https when restapi.certfile is set
            base = {"listen": server.listen, "url": server.url, "requests_served": server.app.requests}
            if actions is not None:
                actions.channel.publish(base)
            else:
                ctx.shm.publish(ctx.name, base)
            if poke:
                ctx.wakeups.poke("supervisor")

        publish(poke=True)
        if actions is not None:
            # build the DCS client now (grpc import, channel): the first switchover request
            # must not pay for it (measured up to 2 s on a busy host)
            threading.Thread(target=actions.warm_up, name="api-dcs-warmup", daemon=True).start()
        while not stopping:
            ctx.wakeups.wait(ctx.name, BEAT_INTERVAL)
            if ctx.refresh_config():
                server.app.config = ctx.config  # tags etc.; a new listen address needs a restart
            publish()
    finally:
        server.shutdown()
        signal.signal(signal.SIGTERM, previous)
    ctx.log.info("REST API stopped after %d requests", server.app.requests)
