"""A local HTTP stand-in of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

It is a stand-in for a hosted model API (which cannot run here): it records every
request it gets and answers with a completion that quotes the last message. A
prompt containing ``[slow]`` waits before answering, so tests can cancel a call or
drop the connection mid-call.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from convmem_bench.httpserver import BackgroundHTTPServer


class ChatCompletionsStandIn(BackgroundHTTPServer):
    def __init__(self, slow_seconds: float = 5.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.slow_seconds = slow_seconds
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                standin.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "authorization": self.headers.get("authorization"),
                    }
                )
                last = body["messages"][-1]["content"]
                if "[slow]" in last:
                    time.sleep(standin.slow_seconds)
                answer = {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {
                                "role": "assistant",
                                "content": f"stand-in reply to: {last}",
                            },
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

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
