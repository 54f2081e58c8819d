"""Free TCP ports for tests and the lab, so concurrent runs never collide."""
from __future__ import annotations

import socket
import threading

# Ports already handed out by this process: the kernel may return a port again once we
# close our probe socket, and two etcd servers asking for the same one would collide.
_given: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        with _lock:
            if port not in _given:
                _given.add(port)
                return port
    raise RuntimeError(f"no free TCP port found on {host}")
