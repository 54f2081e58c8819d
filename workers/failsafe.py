"""Failsafe mode (Patroni's `failsafe_mode`): a primary that loses the DCS keeps running
while EVERY other member listed in the `failsafe` key confirms, through `POST /failsafe`,
that it is not a primary and will not race for the leader key for `ttl` seconds.

Safety argument: a member that accepted a ping sent at t stays out of any race until at
least t + ttl (it counts from when it received the ping, never earlier than t). So while
every listed member accepted the last round, no one can take the key before
`sent + ttl`: that is the failsafe deadline, and the watchdog, the VIP and the decision
core treat it like the lease's (core/timing.authority_deadline). An unlisted member may
not race at all while the key lists members (supervisor/election.py). One member that does
not answer, or answers that it is a primary, ends the failsafe: the primary demotes by the
deadline it had.

The peer timeout is `failsafe_timeout` in the dynamic config (Patroni hard-codes 2 s,
patroni#3550).
"""
from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from pgwarden.core.config_model import Config
from pgwarden.dcs.model import ClusterView


def topology(view: ClusterView) -> dict[str, str]:
    """The `failsafe` key the leader writes: {member name: api_url} for members with one."""
    return {name: m.api_url for name, m in sorted(view.members.items()) if m.api_url}


def listed(view: ClusterView | None) -> dict[str, str]:
    """The last `failsafe` key as {name: api_url}; {} when absent or malformed."""
    if view is None or not isinstance(view.failsafe.value, dict):
        return {}
    return {k: v for k, v in view.failsafe.value.items()
            if isinstance(k, str) and isinstance(v, str)}


def api_base(api_url: str) -> str:
    """'http://h:8008/patroni' -> 'http://h:8008' (Patroni's api_url names /patroni)."""
    url = api_url.rstrip("/")
    return url[: -len("/patroni")] if url.endswith("/patroni") else url


def ping_all(cfg: Config, peers: dict[str, str], body: dict[str, Any],
             timeout: float) -> tuple[bool, dict[str, str]]:
    """POST /failsafe to every peer in parallel, one retry each within `timeout` per try.
    (all accepted, {name: outcome}) - outcome "accepted" or a short reason."""
    results: dict[str, str] = {}
    lock = threading.Lock()

    def one(name: str, url: str) -> None:
        outcome = "no answer"
        for _ in range(2):
            outcome = _post(cfg, api_base(url) + "/failsafe", body, timeout)
            if outcome == "accepted" or not outcome.startswith("no answer"):
                break
        with lock:
            results[name] = outcome

    threads = [threading.Thread(target=one, args=(n, u), daemon=True) for n, u in peers.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2 * timeout + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for name in peers:
        results.setdefault(name, "no answer")
    return all(v == "accepted" for v in results.values()), results


def _post(cfg: Config, url: str, body: dict[str, Any], timeout: float) -> str:
    headers = {"Content-Type": "application/json"}
    rest = cfg.restapi
    if rest.username and rest.password is not None:
        token = base64.b64encode(f"{rest.username}:{rest.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    context = None
    if url.startswith("https:"):
        cafile = getattr(rest, "cafile", None)
        context = ssl.create_default_context(cafile=cafile)
        certfile, keyfile = getattr(rest, "certfile", None), getattr(rest, "keyfile", None)
        if certfile:
            context.load_cert_chain(certfile, keyfile, getattr(rest, "keyfile_password", None))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return "accepted" if r.status == 200 else f"answered {r.status}"
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")[:80]
        return f"refused ({e.code} {text})"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"no answer ({getattr(e, 'reason', e)})"
