"""A small stand-in for a local model server, answering like the real APIs: ollama's `/api/chat`
and `/api/generate` (one JSON object, or NDJSON chunks when `stream: true`) and OpenAI-compatible
`/v1/chat/completions` (one object, or SSE `data:` chunks ending in `[DONE]`).

Tests set `reply` (the model's text), `delay` (seconds before answering), `stall` (stream the
first chunk, then hang) or `status` (an HTTP error), and read `requests`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK = 7  # characters per streamed piece


class FakeLlm:
    def __init__(self) -> None:
        self.reply = '{"decision": "approve", "confidence": 0.9, "reasoning": "fine"}'
        self.delay = 0.0
        self.stall = False
        self.status = 200
        self.models = {"qwen3:14b", "llama3"}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a streamed body ends when the connection closes

            def do_POST(self) -> None:
                body = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"
                )
                fake.requests.append((self.path, body | {"_headers": dict(self.headers)}))
                try:
                    fake.answer(self, self.path, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        time.sleep(self.delay)
        if path not in ("/api/chat", "/api/generate", "/v1/chat/completions"):
            return self._json(h, 404, {"error": "404 page not found"})
        if self.status != 200:
            return self._json(h, self.status, {"error": "something broke"})
        model = str(body.get("model"))
        if path.startswith("/api/") and model not in self.models:
            return self._json(h, 404, {"error": f'model "{model}" not found, try pulling it first'})
        pieces = [self.reply[i : i + CHUNK] for i in range(0, len(self.reply), CHUNK)] or [""]
        stream = body.get("stream", path.startswith("/api/"))  # ollama streams by default
        if path == "/v1/chat/completions":
            return self._openai(h, model, pieces, stream)
        key = "message" if path == "/api/chat" else "response"

        def chunk(text: str, done: bool) -> dict[str, Any]:
            value: Any = {"role": "assistant", "content": text} if key == "message" else text
            out = {"model": model, "created_at": "2026-12-02T00:00:00Z", key: value, "done": done}
            return out | (
                {"done_reason": "stop", "total_duration": 1000, "eval_count": 9} if done else {}
            )

        if not stream:
            return self._json(h, 200, chunk(self.reply, True))
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.end_headers()
        for i, piece in enumerate(pieces):
            h.wfile.write(json.dumps(chunk(piece, False)).encode() + b"\n")
            h.wfile.flush()
            if self.stall and i == 0:
                time.sleep(30)
        h.wfile.write(json.dumps(chunk("", True)).encode() + b"\n")

    def _openai(
        self, h: BaseHTTPRequestHandler, model: str, pieces: list[str], stream: bool
    ) -> None:
        base = {"id": "chatcmpl-1", "created": 1764633600, "model": model}
        if not stream:
            return self._json(
                h,
                200,
                base
                | {
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                },
            )
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            chunk = base | {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            h.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            h.wfile.flush()
            if self.stall and i == 0:
                time.sleep(30)
        last = base | {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        h.wfile.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
