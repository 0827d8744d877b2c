"""The stage view's HTTP server: the page (shipped inside the package), its frames as
server-sent events, and the knob changes it posts -- standard library only, in threads of its
own (one per connection), none of them a real-time thread.

    GET  /            the page          GET /view.js, /view.css   its script and style
    GET  /events      the frames (text/event-stream, one ``data:`` line each)
    POST /set         {"name": "temperature", "value": 0.8}: a knob-driven setting
    POST /press       {"name": "panic"}: an action (panic, end of call)

Nobody else steers the instrument: on this machine's own address (127.0.0.1, the default) a
request must name that address as its Host (a web page elsewhere cannot reach the view through
a DNS name that points here), and a POST must be JSON from the view's own origin (another
site's page cannot post JSON here without asking first, and is not answered). On any other
address every request needs the random token of the URL printed at start (403 without it).
Values are checked by the knobs' own definitions (``settings.params``): out of range, wrong
type or an unknown name is a 400 with one line, and nothing changes. Only the page's own three
files are served.

Why the standard library: a page, a push channel one way (server-sent events: plain HTTP, the
browser reconnects by itself) and a small POST the other way need no framework, and the play
path gains no dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from livepiano import LivepianoError
from livepiano.live.view.stage import Stage
from livepiano.settings.schema import LOCAL_HOSTS

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


class ViewServer:
    """The view's HTTP server. ``listen`` binds the port (a taken port fails here, before the
    session opens its MIDI ports); ``start(stage)`` serves; ``close`` ends it."""

    def __init__(self, host: str = LOCAL_HOSTS[0], port: int = 8765, *,
                 token: str | None = None):
        self.host = host
        self.local = host in LOCAL_HOSTS
        # a token unless the view is on this machine's own address (tests may pass one)
        self.token = token if token is not None else (None if self.local
                                                      else secrets.token_urlsafe(16))
        self.files = {path: page_file(name) for path, (name, _type) in FILES.items()}
        self.stage: Stage | None = None
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            self.httpd = server_class((host, port), _handler(self))
        except OSError as e:
            why = e.strerror or str(e)
            raise LivepianoError(f"the view cannot listen on {host}:{port} ({why}); pick "
                                 f"another port with --view-port (0: any free one) or another "
                                 f"--view-host.") from None
        self.port = self.httpd.server_address[1]

    @property
    def url(self) -> str:
        """The page's address as printed at start (with the token when one is needed)."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname() or host
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def allowed_hosts(self) -> set[str]:
        names = {"127.0.0.1", "localhost", "[::1]"}
        return {f"{n}:{self.port}" for n in names} | (names if self.port == 80 else set())

    def start(self, stage: Stage, prepare: Callable | None = None) -> None:
        """Serve ``stage``: the HTTP thread and the stage's view thread (``prepare`` runs first
        on the latter, e.g. to set its priority)."""
        self.stage = stage
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                             name="view-http", daemon=True),
            threading.Thread(target=stage.run, args=(prepare,), name="view", daemon=True)]
        for t in self._threads:
            t.start()

    def wait_for_page(self, timeout: float) -> None:
        """Until a page is connected (a benchmark measures with one open), else a one-line
        ``LivepianoError``."""
        import time

        deadline = time.monotonic() + timeout
        while self.stage is None or not self.stage.pages():
            if time.monotonic() >= deadline:
                raise LivepianoError(f"no page opened {self.url} within {timeout:.0f} s; open "
                                     f"it in a browser, or leave out --view.")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop serving: the event streams end, the port is free again."""
        if self.stage is not None:
            self.stage.stop()
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(2.0)
        self._threads = []


def serve(loop, scheduler, knobs=None, *, host: str = LOCAL_HOSTS[0], port: int = 8765,
          labels: dict | None = None, prepare: Callable | None = None) -> ViewServer:
    """The view of a session or a benchmark, serving: its server and its stage started."""
    server = ViewServer(host, port)
    try:
        server.start(Stage(loop, scheduler, knobs, clock=loop.clock, labels=labels), prepare)
    except BaseException:
        server.close()
        raise
    return server


def _handler(view: ViewServer):
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

        def _checked(self) -> tuple[str, dict] | None:
            """(path, query) of a request that may be answered; else refused here."""
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if view.token is not None:
                given = (query.get("token") or [""])[0]
                if not hmac.compare_digest(given.encode(), view.token.encode()):
                    self._refuse(403, "this view needs the token of the URL livepiano printed "
                                      "at start (…/?token=...).")
                    return None
            elif (self.headers.get("Host") or "").lower() not in view.allowed_hosts():
                self._refuse(403, "this view answers only on this machine's own address, e.g. "
                                  f"http://127.0.0.1:{view.port}/.")
                return None
            return parts.path, query

        # --- GET ------------------------------------------------------------------------

        def do_GET(self):  # noqa: N802 - the base class's name
            checked = self._checked()
            if checked is None:
                return
            path, _query = checked
            if path == "/events":
                return self._events()
            if path not in FILES:
                return self._refuse(404, "nothing here: the view is at /.")
            body = view.files[path]
            if path == "/":
                mark = f"?token={view.token}" if view.token else ""
                body = body.replace(QUERY_MARK.encode(), mark.encode())
            csp = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                   "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                   "form-action 'none'; frame-ancestors 'none'")
            self._answer(200, body, FILES[path][1], {"Content-Security-Policy": csp})

        do_HEAD = do_GET  # noqa: N815

        def _events(self) -> None:
            stage = view.stage
            page = stage.connect() if stage is not None else None
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
                stage.disconnect(page)
                self.close_connection = True

        # --- POST -----------------------------------------------------------------------

        def do_POST(self):  # noqa: N802 - the base class's name
            checked = self._checked()
            if checked is None:
                return
            path, _query = checked
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
            knobs = view.stage.knobs if view.stage is not None else None
            if knobs is None:
                return self._refuse(409, "nothing to steer here: this session has no knobs.")
            try:
                if path == "/set":
                    knobs.set(body["name"], body["value"])
                else:
                    knobs.press(body["name"])
            except LivepianoError as e:
                return self._refuse(400, str(e))
            self._answer(200, b'{"ok":true}\n', "application/json")

    return Handler
