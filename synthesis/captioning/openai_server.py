"""A small OpenAI-compatible chat server over a local transformers model (a dev tool).

``python -m synthesis.captioning.openai_server --model PATH --port N`` serves
``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health`` on loopback.
It lets the HTTP backend be exercised (tests, laptops) without a ``vllm serve`` fleet;
it serialises requests on one model and is not meant for production traffic.
``--fail-first N`` answers the first N chat requests with HTTP 503, to exercise
client retries.

Why the standard library's ``ThreadingHTTPServer`` and not FastAPI/uvicorn: three JSON
endpoints need no framework, and it starts in milliseconds inside a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from synthesis.captioning.backends import BackendConfig, SamplingConfig, TransformersBackend

log = logging.getLogger(__name__)


class ChatServer(ThreadingHTTPServer):
    """Holds the model, a lock around it, and request counters."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: TransformersBackend, model_name: str, fail_first: int = 0):
        super().__init__(address, ChatHandler)
        self.backend = backend
        self.model_name = model_name
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.chat_requests = 0
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ChatServer:
        """Serve in a daemon thread (stops with :meth:`stop` or when the process ends)."""
        self._thread = threading.Thread(target=self.serve_forever, name="openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.backend.close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {role, content}")
        sampling = SamplingConfig(
            temperature=float(body.get("temperature", 0.7)), top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens") or 128), seed=body.get("seed"),
        )
        with self.lock:
            before = self.backend.stats.generated_tokens
            (text,) = self.backend.generate([messages], sampling)
            used = self.backend.stats.generated_tokens - before
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if used >= sampling.max_tokens else "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": used, "total_tokens": used},
        }


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, {"error": {"message": f"request body is not JSON: {exc}"}})
            return
        with self.server.lock:
            self.server.chat_requests += 1
            failing = self.server.chat_requests <= self.server.fail_first
        if failing:
            self._send(503, {"error": {"message": "injected failure (--fail-first)"}})
            return
        try:
            self._send(200, self.server.complete(body))
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": {"message": str(exc)}})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("openai_server: " + format, *args)


def make_server(model_path: str, *, host: str = "127.0.0.1", port: int = 0, fail_first: int = 0,
                model_name: str | None = None, num_threads: int | None = None) -> ChatServer:
    """Load the model and bind (port 0: a free port); call ``start()`` to serve."""
    backend = TransformersBackend(BackendConfig(kind="transformers", model=model_path, num_threads=num_threads))
    return ChatServer((host, port), backend, model_name or model_path, fail_first=fail_first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local transformers model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N chat requests with 503")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = make_server(args.model, host=args.host, port=args.port, fail_first=args.fail_first,
                         model_name=args.served_model_name, num_threads=args.threads)
    log.info("serving %s at %s", server.model_name, server.base_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
