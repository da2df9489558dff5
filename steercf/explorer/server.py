"""Run the explorer app with uvicorn: in the foreground (``steercf serve``) or in a
background thread on a free loopback port (tests, benchmarks, notebooks)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from steercf.errors import InputError

DEFAULT_HOST = "127.0.0.1"  # local only unless asked: the app has no authentication
DEFAULT_PORT = 8000
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    name = host.strip().strip("[]").lower().removesuffix(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def exposure_warning(host: str) -> str | None:
    """The warning to print before binding ``host``, or None for a loopback address."""
    if is_loopback(host):
        return None
    where = (
        f"every network interface (--host {host or repr(host)})"
        if host.strip().strip("[]") in WILDCARD_HOSTS
        else f"{host} (--host)"
    )
    return (
        f"WARNING: the explorer listens on {where}, so other machines can reach it, and "
        "it has NO AUTHENTICATION: anyone who can reach this port can read the model, "
        "its data set and its users' histories. It answers only requests addressed to "
        "localhost, 127.0.0.1, [::1], the --host name and any --allow-host names."
    )


def serve(
    app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, quiet: bool = False
) -> None:
    """Serve ``app`` until interrupted (Ctrl-C); warns on stderr first when ``host``
    is not a loopback address (the app has no authentication)."""
    import uvicorn

    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")


@contextmanager
def running(app: Any, host: str = DEFAULT_HOST, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` in a daemon thread.

    Yields:
        the base URL, e.g. ``http://127.0.0.1:53117``; the server stops on exit.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))  # the OS picks a free port: no races between parallel runs
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise InputError(f"the explorer server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
