"""The HTTP server: an OpenAI-compatible API (FastAPI + uvicorn) over the models of the store.

    from puhui.serve import create_app, serve
    app = create_app(["smollm2-135m-instruct", "all-minilm-l6-v2"], api_keys=["secret"])
    serve(["smollm2-135m-instruct"], host="127.0.0.1", port=8000)      # blocks; `puhui serve` calls it

Shutdown (SIGTERM, or Ctrl+C) drains before uvicorn closes anything (worker.Drain): the socket stays open and
every new request is a 503 `shutting_down` with Retry-After; the running ones have `drain_timeout` seconds to
finish; those left are ended with a 503 (a stream: an error event, then [DONE]); then uvicorn closes the socket
and the connections, and the workers stop. A second Ctrl+C ends the drain at once. After a SIGTERM the process
exits 0 (after Ctrl+C, as interrupted).
"""
from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket

from ..errors import BadInput
from .app import (DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_QUEUE, DEFAULT_MODELS, DEFAULT_TIMEOUT_S,
                  create_app)
from .worker import SETTLE_S

DEFAULT_DRAIN_S = 30.0      # seconds running requests have to finish once the server is told to stop

__all__ = ["create_app", "serve", "check_bind", "is_loopback", "DEFAULT_MODELS"]


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    if not host:
        return False          # every interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def check_bind(host: str, api_keys, insecure: bool = False) -> None:
    """Refuse to listen beyond this machine without an API key, unless told it is meant (--insecure)."""
    if not api_keys and not insecure and not is_loopback(host):
        raise BadInput(f"refusing to listen on {host} without an API key: anyone who can reach it could use the "
                       f"models. Give one with --api-key KEY (or PUHUI_API_KEYS), or pass --insecure if an open "
                       f"server is what you want (or listen on 127.0.0.1)")


def serve(models=DEFAULT_MODELS, host: str = "127.0.0.1", port: int = 8000, api_keys=None,
          max_queue: int = DEFAULT_MAX_QUEUE, max_batch: int = DEFAULT_MAX_BATCH, context: int | None = None,
          request_timeout: float = DEFAULT_TIMEOUT_S, max_body: int = DEFAULT_MAX_BODY, insecure: bool = False,
          quant: str | None = None, drain_timeout: float = DEFAULT_DRAIN_S,
          on_ready=None, log_level: str = "info") -> None:
    """Load the models and serve them until interrupted. on_ready(url) is called once the socket listens.
    api_keys: None means the settings' (PUHUI_API_KEYS or config.toml); an empty list, none. drain_timeout:
    seconds the requests in progress at shutdown have to finish (then a 503 ends them)."""
    import uvicorn

    if api_keys is None:
        from ..settings import get_settings
        api_keys = get_settings().api_keys
    check_bind(host, api_keys, insecure)
    if drain_timeout < 0:
        raise BadInput("drain_timeout must be >= 0", param="drain_timeout")
    app = create_app(models, api_keys=api_keys, max_queue=max_queue, max_batch=max_batch, context=context,
                     request_timeout=request_timeout, max_body=max_body, quant=quant)
    # uvicorn's own grace comes after the drain, when every handler has answered: only the last bytes to a slow
    # reader are left then; it cancels a handler only past that
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=SETTLE_S)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            await app.state.drain.run(drain_timeout, forced=lambda: self.force_exit)
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    # uvicorn raises the caught signals again once it is done; a drained SIGTERM is a clean
                    # exit (0), not a death by the signal (Ctrl+C still ends as an interrupt: 130)
                    self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and on_ready is not None:
                bound = port
                for server in getattr(self, "servers", []):
                    for sock in getattr(server, "sockets", []):
                        bound = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"http://{shown}:{bound}")

    Server(config).run()
