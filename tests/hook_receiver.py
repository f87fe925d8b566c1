"""A real HTTP receiver for REST-hook deliveries: records every POST (headers and body) and answers the statuses it
is told to, in order (then the last one for good)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses=(200,), delay: float = 0.0, hold_first: bool = False):
        self.statuses = list(statuses)
        self.delay = delay
        # hold_first: the first POST gets no answer until release() (a relay can be killed while it waits)
        self.gate = threading.Event() if hold_first else None
        self.location: str | None = None  # sent with every answer when set (a redirect)
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                    receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "status": status})
                receiver.arrived.set()
                if receiver.gate is not None and len(receiver.received) == 1:
                    receiver.gate.wait(60)
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="hook-receiver")

    def __enter__(self):
        self.thread.start()
        return self

    def release(self):
        if self.gate is not None:
            self.gate.set()

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(item["body"]) for item in self.received]

    def accepted(self) -> list[dict]:
        """The POSTs it answered with a 2xx: what a Zap would have run on."""
        with self.lock:
            return [json.loads(item["body"]) for item in self.received if 200 <= item["status"] < 300]
