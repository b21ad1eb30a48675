"""A local HTTP stand-in of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

It is a stand-in for a hosted model API (which cannot run here): it records every
request it gets and answers with a completion that quotes the last message, whole or,
when the request asks for ``stream``, as server-sent events in several chunks.

A prompt containing ``[slow]`` takes ``slow_seconds`` to answer, ``[slow:N]`` takes N
seconds; a streamed slow answer sends one chunk a second meanwhile, so tests see
pieces arrive during a long call. A client that goes away mid-stream is recorded in
``aborted``: that is how a test knows a cancelled call really stopped the model.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from convmem_bench.httpserver import BackgroundHTTPServer

SLOW = re.compile(r"\[slow(?::(\d+(?:\.\d+)?))?\]")


class ChatCompletionsStandIn(BackgroundHTTPServer):
    def __init__(self, slow_seconds: float = 5.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.aborted: list[str] = []  # the prompts whose stream the client dropped
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                with standin._lock:
                    standin.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "authorization": self.headers.get("authorization"),
                        }
                    )
                last = body["messages"][-1]["content"]
                reply = f"stand-in reply to: {last}"
                match = SLOW.search(last)
                delay = 0.0
                if match:
                    delay = float(match.group(1)) if match.group(1) else standin.slow_seconds
                if body.get("stream"):
                    self._stream(body["model"], last, reply, delay)
                else:
                    time.sleep(delay)
                    self._whole(body["model"], reply)

            def _whole(self, model: str, reply: str) -> None:
                answer = {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": reply},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model: str, prompt: str, reply: str, delay: float) -> None:
                pieces = max(4, int(delay))  # one a second when slow, at least four
                size = -(-len(reply) // pieces)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for index, start in enumerate(range(0, len(reply), size)):
                        if delay and index:
                            time.sleep(delay / pieces)
                        self._event(model, {"content": reply[start : start + size]}, None)
                    self._event(model, {}, "stop")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with standin._lock:
                        standin.aborted.append(prompt)

            def _event(self, model: str, delta: dict[str, str], finish: str | None) -> None:
                chunk = {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()  # raises once the client has gone away

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
