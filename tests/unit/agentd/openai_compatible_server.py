"""A tiny OpenAI-compatible HTTP server (stdlib only) whose answer depends on the requested model.

Models: "ok-model" answers with usage; "no-usage" answers without it; "limited" 429;
"denied" 401; "missing" 404 (model_not_found); "busy" 503; "slow" waits until released.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERRORS = {
    "limited": (429, "rate_limit_exceeded", "Rate limit reached"),
    "denied": (401, "invalid_api_key", "Incorrect API key provided"),
    "missing": (404, "model_not_found", "The model `missing` does not exist"),
    "busy": (503, "overloaded", "The server is overloaded"),
}


class OpenAICompatibleServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release_slow = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({key.lower(): value for key, value in self.headers.items()})
                status, payload = server.answer(body)
                encoded = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(encoded)))
                    self.end_headers()
                    self.wfile.write(encoded)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout case)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # A short poll interval only makes shutdown() return sooner.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release_slow.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body["model"]
        if model in _ERRORS:
            status, code, message = _ERRORS[model]
            return status, {"error": {"message": message, "type": "error", "code": code}}
        if model == "slow":
            self.release_slow.wait(timeout=30)
        completion: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer to: {body['messages'][-1]['content']}"},
                    "finish_reason": "stop",
                }
            ],
        }
        if model != "no-usage":
            completion["usage"] = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
        return 200, completion
