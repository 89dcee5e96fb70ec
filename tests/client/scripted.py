"""A real HTTP server on loopback for the client tests, answering from a script."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, dict[str, Any]], tuple[int, dict[str, str], dict[str, Any]]]


class Scripted:
    """A real HTTP server on 127.0.0.1 that records requests and answers via `answer`."""

    def __init__(self, answer: Answer, port: int = 0) -> None:
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append((time.monotonic(), self.path, body))
                code, headers, reply = answer(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posted(self, suffix: str) -> list[dict[str, Any]]:
        return [b for _, p, b in self.requests if p.endswith(suffix)]


def ok(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Answers as the server does when all goes well (run id 7)."""
    if path == "/api/v1/runs":
        return 201, {}, {"id": 7}
    return 201, {}, {"run_id": 7, "step": body.get("step"), "created": True, "edge": None}
