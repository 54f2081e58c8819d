"""The lab's side of `pgwarden.lab.probe`: a long-lived request runner inside one namespace.

The root namespace has no route into the lab (by design), so every HTTP/SQL/TCP request the
lab makes goes through a probe process started with `ip netns exec`; one per namespace is
kept for the Lab's lifetime, so a poll loop does not start an interpreter per request.
"""
from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class Probe:
    """A `pgwarden.lab.probe` process inside one namespace; JSON lines over its pipes."""

    def __init__(self, ns: str, python: str, stderr: Path | None = None) -> None:
        self.ns = ns
        self.python = python
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self._id = 0
        self._buf = b""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.close()
            err: Any = subprocess.DEVNULL
            if self.stderr is not None and self.stderr.parent.is_dir():
                err = open(self.stderr, "ab")
            try:
                self.proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns, self.python, "-u", "-m", "pgwarden.lab.probe"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    start_new_session=True)
            finally:
                if err is not subprocess.DEVNULL:
                    err.close()
            self._buf = b""
        return self.proc

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request; waits at most `timeout` + 5 s (then the probe is restarted)."""
        with self._lock:
            return self._request(req, timeout)

    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        self._id += 1
        req = dict(req, id=self._id)
        try:
            proc.stdin.write((json.dumps(req) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return {"error": f"probe in {self.ns} died"}
        deadline = time.monotonic() + timeout + 5.0
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    try:
                        ans = json.loads(line)
                    except ValueError:
                        continue
                    if ans.get("id") == self._id:
                        return ans  # type: ignore[no-any-return]
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.close()
                    return {"error": f"probe in {self.ns} did not answer in {timeout + 5:.0f} s"}
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.close()
                    return {"error": f"probe in {self.ns} exited"}
                self._buf += chunk

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # our own child
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if f:
                    f.close()
