"""A real HTTP receiver on 127.0.0.1 that plays the platform system in the webhook tests."""

import json
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every request. `status` is what it answers; `hold` (an Event) keeps requests open;
    per lane (path, shop) it notes requests that overlapped another one of the same lane."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.status = 200
        self.delay = 0.0
        self.hold: threading.Event | None = None
        self.requests: list[dict] = []
        self.in_flight: dict = defaultdict(int)
        self.overlaps: list = []
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                lane = (self.path, json.loads(body)["data"].get("shop_id"))
                with receiver.lock:
                    if receiver.in_flight[lane]:
                        receiver.overlaps.append(lane)
                    receiver.in_flight[lane] += 1
                receiver.entered.set()
                if receiver.hold is not None:
                    receiver.hold.wait(20)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                with receiver.lock:
                    receiver.in_flight[lane] -= 1
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "status": status,
                            "lane": lane,
                        }
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def received(self, path: str = "/hooks", *, ok_only: bool = False) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path and (not ok_only or 200 <= r["status"] < 300)]
