"""A real S3 API on loopback for tests: moto's server, and a fault-injecting proxy in front of it.

moto's server mode speaks the S3 REST API over HTTP, so s3fs/botocore and pyarrow talk to
it exactly as to AWS. moto has no fault injection, hence :class:`FaultProxy`: a small
HTTP proxy that forwards to moto and, for the first N requests matching a rule, answers
an S3 error (503 SlowDown, 500 InternalError) or stalls past the client's read timeout.
We wrote it ourselves because the usual tools (toxiproxy, mitmproxy) are external
processes with more to set up than the ~100 lines here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the fake secret key of the test environment: it must never show up in logs or files
SECRET_KEY = "medcurate-test-secret-8c1f2e9d7b"
ACCESS_KEY = "AKIAMEDCURATETEST01"

_HOP_BY_HOP = {"expect", "connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL, stops at exit."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_environment(endpoint: str, **extra: str) -> Iterator[None]:
    """Fake credentials and ``endpoint`` in the standard AWS variables, fresh fsspec s3 config.

    Restores the environment and ``fsspec.config.conf['s3']`` afterwards and drops cached
    s3fs instances both ways, so no test sees another's endpoint or timeouts.
    """
    import fsspec
    import s3fs

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }
    cleared = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    saved = {k: os.environ.get(k) for k in (*env, *cleared)}
    saved_conf = fsspec.config.conf.pop("s3", None)
    for key in cleared:
        os.environ.pop(key, None)
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        fsspec.config.conf.pop("s3", None)
        if saved_conf is not None:
            fsspec.config.conf["s3"] = saved_conf
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclasses.dataclass
class Fault:
    """Misbehave on the first ``count`` requests whose method and path match.

    ``kind``: ``"503"`` (SlowDown), ``"500"`` (InternalError) or ``"stall"`` (no answer
    for ``stall_seconds`` or until the proxy stops, then the connection is closed). ``user_agent``: only requests
    whose User-Agent contains it (e.g. ``"botocore"``: s3fs, not pyarrow's AWS SDK).
    """

    method: str
    path: str  # regular expression searched in the request path (with query)
    count: int
    kind: str = "503"
    user_agent: str = "botocore"
    stall_seconds: float = 3.0
    injected: int = 0

    def matches(self, method: str, path: str, user_agent: str) -> bool:
        return (
            self.injected < self.count
            and re.fullmatch(self.method, method) is not None
            and re.search(self.path, path) is not None
            and self.user_agent.lower() in user_agent.lower()
        )


_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}


class FaultProxy:
    """A threaded HTTP proxy on loopback in front of ``upstream`` that injects :class:`Fault`s.

    Counts every request it forwards and every fault it injects (``log``), so a test
    can prove the client really met the failures. Use as a context manager.
    """

    def __init__(self, upstream: str, faults: list[Fault], *, upstream_timeout: float = 30.0):
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.faults = faults
        self.upstream_timeout = upstream_timeout
        self.forwarded = 0
        self.log: list[tuple[str, str, str]] = []  # (kind, method, path) of injected faults
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends stalls early at exit
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def injected(self, kind: str | None = None) -> int:
        return sum(1 for k, _, _ in self.log if kind is None or k == kind)

    def _pick_fault(self, method: str, path: str, user_agent: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, user_agent):
                    fault.injected += 1
                    self.log.append((fault.kind, method, path))
                    return fault
            self.forwarded += 1
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 so that ``Expect: 100-continue`` (botocore's PUTs) is answered by the
            # base class; every answer closes its connection: nothing to keep in sync
            protocol_version = "HTTP/1.1"

            def handle_expect_100(self) -> bool:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer: no headers
                self.wfile.flush()
                return True

            def end_headers(self) -> None:
                self.send_header("Connection", "close")
                super().end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._pick_fault(self.command, self.path, self.headers.get("User-Agent", ""))
                if fault is not None and fault.kind == "stall":
                    proxy._stopping.wait(fault.stall_seconds)
                    self.close_connection = True
                    return  # no answer at all: the client's read timeout fires first
                if fault is not None:
                    status, code, message = _ERRORS[fault.kind]
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault-{fault.injected}</RequestId></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=proxy.upstream_timeout)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    chunked = False
                    for key, value in response.getheaders():
                        if key.lower() == "transfer-encoding":
                            chunked = True
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    if chunked and self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            def _safe_handle(self) -> None:
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (its timeout): nothing to answer

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _safe_handle

        return Handler
