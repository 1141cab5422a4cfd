"""A real HTTP server on 127.0.0.1 for the API tests: uvicorn in a thread, on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pathway import Engine

TOKENS = {
    "clinician": ("dr-jones", ["clinician"]),
    "scheduler": ("cron", ["scheduler"]),
    "auditor": ("audit-office", ["auditor"]),
    "admin": ("ops", ["admin"]),
}


def token_for(role: str) -> str:
    return f"test-token-{role}"


def token_store() -> object:
    from pathway.server import Principal, TokenStore, hash_token

    return TokenStore(
        [(hash_token(token_for(role)), Principal(name, frozenset(roles))) for role, (name, roles) in TOKENS.items()]
    )


@dataclass
class Running:
    base_url: str
    engine: Engine

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(role)}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(engine: Engine, *, max_in_flight: int = 16) -> Iterator[Running]:
    """Serve the API on `engine` until the block ends."""
    import uvicorn

    from pathway.server import create_app

    app = create_app(engine, token_store(), max_in_flight=max_in_flight)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
