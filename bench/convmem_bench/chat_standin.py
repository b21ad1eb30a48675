"""A local HTTP stand-in of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

It is a stand-in for a hosted model API (which cannot run here): it records every
request it gets and answers with a completion that quotes the last message, whole or,
when the request asks for ``stream``, as server-sent events in several chunks.

A request that offers ``tools`` and whose last message asks ``[tool:NAME]`` or
``[tool:NAME {json arguments}]`` is answered with a call of that tool (whole or
streamed); once the tool's result is the last message, the answer quotes it.

A request asking for a summary (convmem's compaction: its last message starts with
"Summarise the conversation above") is answered with a short summary that names how
many messages it was given. ``fail_next = N`` answers the next N requests with HTTP 500,
as a hosted API in trouble does.

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
TOOL = re.compile(r"\[tool:(\w+)(?: (\{.*?\}))?\]")
SUMMARY_REQUEST = "Summarise the conversation above"


class ChatCompletionsStandIn(BackgroundHTTPServer):
    def __init__(self, slow_seconds: float = 5.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.aborted: list[str] = []  # the prompts whose stream the client dropped
        self.slow_seconds = slow_seconds
        self.fail_next = 0
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
                    failing = standin.fail_next > 0
                    standin.fail_next -= failing
                if failing:
                    self._send_json({"error": {"message": "stand-in failure"}}, status=500)
                    return
                message = body["messages"][-1]
                last = _text(message.get("content"))
                if last.startswith(SUMMARY_REQUEST) and not body.get("stream"):
                    given = [m for m in body["messages"][:-1] if m.get("role") != "system"]
                    self._whole(body["model"], f"stand-in summary of {len(given)} messages.")
                    return
                wanted = TOOL.search(last) if body.get("tools") else None
                if wanted and message.get("role") == "user":
                    call = {
                        "id": f"call_{len(standin.requests)}",
                        "type": "function",
                        "function": {"name": wanted.group(1), "arguments": wanted.group(2) or "{}"},
                    }
                    self._tool_call(body["model"], call, stream=bool(body.get("stream")))
                    return
                if message.get("role") == "tool":
                    reply = f"stand-in reply to the tool result: {last}"
                else:
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
                message = {"role": "assistant", "content": reply}
                self._send_json(_completion(model, message, "stop"))

            def _tool_call(self, model: str, call: dict[str, Any], *, stream: bool) -> None:
                if stream:
                    self._start_events()
                    self._event(
                        model, {"role": "assistant", "tool_calls": [{"index": 0, **call}]}, None
                    )
                    self._event(model, {}, "tool_calls")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    return
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                self._send_json(_completion(model, message, "tool_calls"))

            def _send_json(self, answer: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model: str, prompt: str, reply: str, delay: float) -> None:
                pieces = max(4, int(delay))  # one a second when slow, at least four
                size = -(-len(reply) // pieces)
                self._start_events()
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

            def _start_events(self) -> None:
                """Headers of a server-sent event stream that ends with the connection."""
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True

            def _event(self, model: str, delta: dict[str, Any], finish: str | None) -> None:
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


def _completion(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    """A whole chat completion with one choice."""
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _text(content: object) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
