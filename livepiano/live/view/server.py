"""The stage view's HTTP server, a process of its own (``python -m livepiano.live.view.server
HOST PORT REALTIME``, started by ``process.ViewServer``): the page (shipped inside the package), the
session's frames as server-sent events, and the knob changes the page posts -- standard
library only.

    GET  /            the page          GET /view.js, /view.css   its script and style
    GET  /events      the frames (text/event-stream, one ``data:`` line each)
    POST /set         {"name": "temperature", "value": 0.8}: a knob-driven setting
    POST /press       {"name": "panic"}: an action (panic, end of call)

With the session: its stdin brings a first line (the token, whether there are knobs to steer),
then one frame per line; its stdout answers ``{"listening": PORT}`` (or ``{"error": LINE}``),
then ``{"pages": N}`` whenever the number of open pages changes and ``{"set": [NAME, VALUE]}``
/ ``{"press": NAME}`` for each accepted change. It ends when its stdin does (the session ended,
or died).

Nobody else steers the instrument: on this machine's own address (127.0.0.1, the default) a
request must name that address as its Host (a web page elsewhere cannot reach the view through
a DNS name that points here), and a POST must be JSON from the view's own origin (another
site's page cannot post JSON here without asking first, and is not answered). On any other
address every request needs the random token of the URL printed at start (403 without it).
Values are checked by the knobs' own definitions (``settings.params``): out of range, wrong
type or an unknown name is a 400 with one line, and nothing changes. Only the page's own three
files are served.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from livepiano import LivepianoError
from livepiano.live.view.pages import Pages
from livepiano.settings import params

log = logging.getLogger(__name__)

FILES = {  # path -> (file in page/, content type): nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/view.css": ("view.css", "text/css; charset=utf-8"),
}
QUERY_MARK = "{{query}}"  # in index.html: where the token goes into the page's own links
KEEPALIVE_S = 10.0  # a comment line on an idle event stream this often
WRITE_TIMEOUT_S = 10.0  # a page that takes no data for this long is dropped
MAX_BODY = 4096
FIFO_PRIORITY = 1  # the engine's: below the session's listener and scheduler
SWITCH_INTERVAL_S = 0.0005
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page_file(name: str) -> bytes:
    """One of the page's files, as shipped inside the package."""
    try:
        return resources.files("livepiano.live.view").joinpath("page", name).read_bytes()
    except (FileNotFoundError, OSError):
        raise LivepianoError(f"the view's page file {name} is missing from the installed "
                             f"package; reinstall livepiano.") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16


class View:
    """The server's state: where it listens, the token, the page's files, the pages, and how
    an accepted change reaches the session (``tell``)."""

    def __init__(self, host: str, port: int, token: str | None, knobs: bool,
                 tell: Callable[[dict], None]):
        self.host = host
        self.token = token
        self.knobs = knobs
        self.tell = tell
        self.files = {path: page_file(name) for path, (name, _type) in FILES.items()}
        self.pages = Pages(on_count=lambda n: tell({"pages": n}))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            self.httpd = server_class((host, port), handler(self))
        except OSError as e:
            why = e.strerror or str(e)
            raise LivepianoError(f"the view cannot listen on {host}:{port} ({why}); pick "
                                 f"another port with --view-port (0: any free one) or another "
                                 f"--view-host.") from None
        self.port = self.httpd.server_address[1]

    def allowed_hosts(self) -> set[str]:
        names = {"127.0.0.1", "localhost", "[::1]"}
        return {f"{n}:{self.port}" for n in names} | (names if self.port == 80 else set())


def handler(view: View):
    class Handler(BaseHTTPRequestHandler):
        server_version = "livepiano-view"
        sys_version = ""

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            log.debug("view %s: " + format, self.address_string(), *args)

        # --- answers --------------------------------------------------------------------

        def _answer(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                    extra: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _refuse(self, code: int, line: str) -> None:
            self._answer(code, (line + "\n").encode())

        def _checked(self) -> str | None:
            """The path of a request that may be answered; else it is refused here."""
            parts = urlsplit(self.path)
            if view.token is not None:
                given = (parse_qs(parts.query).get("token") or [""])[0]
                if not hmac.compare_digest(given.encode(), view.token.encode()):
                    self._refuse(403, "this view needs the token of the URL livepiano printed "
                                      "at start (…/?token=...).")
                    return None
            elif (self.headers.get("Host") or "").lower() not in view.allowed_hosts():
                self._refuse(403, "this view answers only on this machine's own address, e.g. "
                                  f"http://127.0.0.1:{view.port}/.")
                return None
            return parts.path

        # --- GET ------------------------------------------------------------------------

        def do_GET(self):  # noqa: N802 - the base class's name
            path = self._checked()
            if path is None:
                return
            if path == "/events":
                return self._events()
            if path not in FILES:
                return self._refuse(404, "nothing here: the view is at /.")
            body = view.files[path]
            if path == "/":
                mark = f"?token={view.token}" if view.token else ""
                body = body.replace(QUERY_MARK.encode(), mark.encode())
            self._answer(200, body, FILES[path][1], {"Content-Security-Policy": CSP})

        do_HEAD = do_GET  # noqa: N815

        def _events(self) -> None:
            page = view.pages.connect()
            if page is None:
                return self._refuse(503, "too many pages are open on this view; close one.")
            try:
                self.connection.settimeout(WRITE_TIMEOUT_S)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Accel-Buffering", "no")
                self.end_headers()
                self.wfile.write(b"retry: 1000\n\n")
                while True:
                    frame = page.next(KEEPALIVE_S)
                    if frame is None:
                        break
                    self.wfile.write(b": idle\n\n" if frame is False
                                     else b"data: " + frame + b"\n\n")
            except OSError:  # the page went away (or stopped reading)
                pass
            finally:
                view.pages.disconnect(page)
                self.close_connection = True

        # --- POST -----------------------------------------------------------------------

        def do_POST(self):  # noqa: N802 - the base class's name
            path = self._checked()
            if path is None:
                return
            if path not in ("/set", "/press"):
                return self._refuse(404, "nothing to post here: /set or /press.")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return self._refuse(415, "post JSON (Content-Type: application/json).")
            origin = self.headers.get("Origin")
            host = self.headers.get("Host") or ""
            if origin is not None and origin.lower() != f"http://{host}".lower():
                return self._refuse(403, "the view takes changes only from its own page.")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                return self._refuse(400, f"the body must be JSON of at most {MAX_BODY} bytes.")
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError):
                body = None
            example = ('{"name": "temperature", "value": 0.8}' if path == "/set"
                       else '{"name": "panic"}')
            keys = {"name", "value"} if path == "/set" else {"name"}
            if not isinstance(body, dict) or set(body) != keys:
                return self._refuse(400, f"the body must be JSON like {example}.")
            if not view.knobs:
                return self._refuse(409, "nothing to steer here: this session has no knobs.")
            try:
                if path == "/set":
                    view.tell({"set": list(params.checked_setting(body["name"], body["value"]))})
                else:
                    view.tell({"press": params.checked_action(body["name"])})
            except LivepianoError as e:
                return self._refuse(400, str(e))
            self._answer(200, b'{"ok":true}\n', "application/json")

    return Handler


def realtime(mode: str) -> None:
    """Under ``--realtime auto`` or ``fifo``, this process's threads at the lowest real-time
    priority (those started later inherit it) and a short GIL switch interval: a change
    posted by the page must not wait for a core behind other programs (it then waited up to
    50 ms on a busy machine, against 3 ms for a knob's CC). Its threads sleep on sockets and
    the pipe all session long; what a request costs is small and bounded."""
    if mode not in ("auto", "fifo"):
        return
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    except (AttributeError, OSError):
        pass  # not allowed here: plain threads


def main(argv: list[str]) -> int:
    """The server process: ``HOST PORT [REALTIME]``; see the module docstring for its
    pipes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the session's; EOF ends this
    realtime(argv[2] if len(argv) > 2 else "off")
    out = sys.stdout.buffer
    lock = threading.Lock()

    def tell(message: dict) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with lock:
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass

    hello = json.loads(sys.stdin.buffer.readline() or b"{}")
    try:
        view = View(argv[0], int(argv[1]), hello.get("token"), bool(hello.get("knobs")), tell)
    except LivepianoError as e:
        tell({"error": str(e)})
        return 1
    tell({"listening": view.port})
    serving = threading.Thread(target=view.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                               name="view-http", daemon=True)
    serving.start()
    try:
        for line in sys.stdin.buffer:  # the session's frames, until it ends
            try:
                frame = json.loads(line)
            except ValueError:
                continue
            view.pages.feed(frame)
    finally:
        view.pages.close()
        view.httpd.shutdown()
        view.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
