"""A throwaway flags endpoint on 127.0.0.1 for the benchmarks and the reference-side scripts.

Standard library only, so both our interpreter and the reference's (.refvenv) can import it.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_flags(*bodies: bytes) -> ThreadingHTTPServer:
    """A running server answering its n-th GET with ``bodies[n]`` (the last one repeats).

    ``server.served`` lists the paths requested; stop it with ``shutdown()`` and ``server_close()``.
    """
    served = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            body = bodies[min(len(served), len(bodies) - 1)]
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.served = served  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="flags-server", daemon=True).start()
    return server
