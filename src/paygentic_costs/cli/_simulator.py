"""A local simulated LLM provider for the demo: OpenAI chat completions and Anthropic messages, streams included.

It answers with realistic usage (token counts derived from the request size, deterministic), so the real SDKs, our
integrations and the pricing run exactly as in production, with no account and no network. Request content is
measured, never stored.
"""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SimulatedProvider"]

_WORDS = ("Sure", "!", " Here", " is", " the", " summary", " you", " asked", " for", ".")


def _tokens(body: bytes, salt: str) -> tuple[int, int]:
    seed = zlib.crc32(body + salt.encode())
    prompt = 200 + len(body) // 3 + seed % 1800
    completion = 40 + (seed >> 8) % 600
    return prompt, completion


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints its own output
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{self.server.next_id()}")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = json.loads(raw or b"{}")
        if self.path.endswith("/chat/completions"):
            self._openai(raw, request)
        elif self.path.endswith("/messages"):
            self._anthropic(raw, request)
        else:
            self._send(404, b'{"error":{"message":"not simulated"}}', "application/json")

    def _openai(self, raw: bytes, request: dict[str, Any]) -> None:
        model = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}.get(
            request.get("model", ""), request.get("model", "")
        )
        prompt, completion = _tokens(raw, "openai")
        cached = (prompt // 1024) * 1024 if prompt > 1024 else 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        ident = f"chatcmpl-sim{self.server.next_id()}"
        base = {
            "id": ident,
            "created": 1764000000,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
        }
        if not request.get("stream"):
            body = {
                **base,
                "object": "chat.completion",
                "usage": usage,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(_WORDS), "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
            }
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        chunks = [
            {
                **base,
                "object": "chat.completion.chunk",
                "usage": None,
                "choices": [{"index": 0, "delta": {"content": word}, "logprobs": None, "finish_reason": None}],
            }
            for word in _WORDS
        ]
        chunks[-1]["choices"][0]["finish_reason"] = "stop"
        if (request.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        self._send(200, "".join(lines).encode(), "text/event-stream")

    def _anthropic(self, raw: bytes, request: dict[str, Any]) -> None:
        model = {
            "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5": "claude-haiku-4-5-20251001",
        }.get(request.get("model", ""), request.get("model", ""))
        prompt, completion = _tokens(raw, "anthropic")
        cache_read = prompt // 2 if prompt > 1200 else 0
        usage = {
            "input_tokens": prompt - cache_read,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": completion,
            "service_tier": "standard",
        }
        ident = f"msg_sim{self.server.next_id()}"
        message = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not request.get("stream"):
            body = {**message, "content": [{"type": "text", "text": "".join(_WORDS)}]}
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        events += [
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
            )
            for w in _WORDS
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": completion},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        sse = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        self._send(200, sse.encode(), "text/event-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._ids = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids


class SimulatedProvider:
    """Runs the simulated provider on a free loopback port (context manager)."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="simulated-provider", daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> SimulatedProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
