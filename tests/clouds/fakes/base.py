"""What every fake shares: a threaded loopback server, the log of requests it saw, requests it refused as wrong
(a test fails on any), injected faults (a status, headers and body answered N times before the real answer)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    raw: bytes = b""
    target: str = ""  # path and query as sent

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    answer: Answer
    times: int


class WrongRequest(Exception):
    """The adapter called the API wrongly: answered 400 and recorded, so the test fails."""


@dataclass
class Instance:
    """One instance as every fake keeps it; each fake renders it in its API's shape."""

    id: str
    name: str
    region: str
    tags: dict[str, str]
    state: str  # running | stopping | stopped | starting (the fake's own vocabulary)
    polls: int = 0  # reads since its last transition began (a transition ends at the second read)


class FakeCloud:
    """Subclasses implement route(request) -> Answer and may raise WrongRequest."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.seen: list[Request] = []
        self.wrong: list[str] = []
        self.over_match = False  # a search whose index answers more than asked (fakes with a search API honour it)
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                request = Request(
                    self.command, split.path, query, {k.lower(): v for k, v in self.headers.items()}, body
                )
                request.raw, request.target = raw, self.path
                answer = fake.answer(request)
                if isinstance(answer.body, bytes):  # forwarded or XML, as it is
                    payload = answer.body
                else:
                    payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                headers = {"content-type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(self, method: str, path: str, answer: Answer, times: int = 1) -> None:
        with self._lock:
            self._faults.append(Fault(method, re.compile(path), answer, times))

    def count(self, method: str, path: str) -> int:
        pattern = re.compile(path)
        with self._lock:
            return sum(1 for r in self.seen if r.method == method and pattern.fullmatch(r.path))

    def answer(self, request: Request) -> Answer:
        with self._lock:
            self.seen.append(request)
            for fault in self._faults:
                if fault.times and fault.method == request.method and fault.path.fullmatch(request.path):
                    fault.times -= 1
                    return fault.answer
            try:
                return self.route(request)
            except WrongRequest as wrong:
                self.wrong.append(f"{request.method} {request.path}: {wrong}")
                return Answer(400, {"error": {"code": "FakeRefused", "message": str(wrong)}})

    def route(self, request: Request) -> Answer:
        raise NotImplementedError


def expect(condition: bool, why: str) -> None:
    if not condition:
        raise WrongRequest(why)


def settle(instance: Instance) -> None:
    """A stopping or starting instance reaches its state on the second read after the action."""
    if instance.state in ("stopping", "starting"):
        instance.polls += 1
        if instance.polls >= 2:
            instance.state = "stopped" if instance.state == "stopping" else "running"
            instance.polls = 0


def page(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    """items[token:token+size] and the next token ("" or None at the end)."""
    start = int(token or 0)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)
