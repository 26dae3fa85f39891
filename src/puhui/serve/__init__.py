"""The HTTP server: an OpenAI-compatible API (FastAPI + uvicorn) over the models of the store.

    from puhui.serve import create_app, serve
    app = create_app(["smollm2-135m-instruct", "all-minilm-l6-v2"], api_keys=["secret"])
    serve(["smollm2-135m-instruct"], host="127.0.0.1", port=8000)      # blocks; `puhui serve` calls it
"""
from __future__ import annotations

import ipaddress
import socket

from ..errors import BadInput
from .app import (DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_QUEUE, DEFAULT_MODELS, DEFAULT_TIMEOUT_S,
                  create_app)

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
          quant: str | None = None,
          on_ready=None, log_level: str = "info") -> None:
    """Load the models and serve them until interrupted. on_ready(url) is called once the socket listens.
    api_keys: None means the settings' (PUHUI_API_KEYS or config.toml); an empty list, none."""
    import uvicorn

    if api_keys is None:
        from ..settings import get_settings
        api_keys = get_settings().api_keys
    check_bind(host, api_keys, insecure)
    app = create_app(models, api_keys=api_keys, max_queue=max_queue, max_batch=max_batch, context=context,
                     request_timeout=request_timeout, max_body=max_body, quant=quant)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)

    class Server(uvicorn.Server):
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
