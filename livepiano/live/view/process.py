"""The session's side of the stage view's server: the server runs as a process of its own
(``server``), so that HTTP, JSON and slow browsers never hold this process's GIL while the
scheduler waits for it; this starts it, hands it the view thread's frames through a pipe that
is never waited on, and carries the changes a page makes to the knobs.

    view thread --frame--> write(non-blocking; a full pipe drops whole frames) --> server
    server --{"pages": N} / {"set": [NAME, VALUE]} / {"press": NAME}--> reader thread
           --> Stage.pages / Knobs.set / Knobs.press (checked again, then the engine thread)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from livepiano import LivepianoError
from livepiano.live.view.stage import Stage
from livepiano.settings.schema import LOCAL_HOSTS

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0  # the server process says where it listens within this
PENDING_MAX = 1 << 20  # bytes of frames waiting for the pipe before frames are dropped


class ViewServer:
    """The view's server process. The constructor starts it and waits until it listens (a
    taken port fails here, before the session opens its MIDI ports); ``start(stage)`` feeds it;
    ``close`` ends it."""

    def __init__(self, host: str = LOCAL_HOSTS[0], port: int = 8765, *,
                 token: str | None = None, realtime: str = "off"):
        """``realtime``: the session's ``--realtime``; under auto or fifo the server's threads
        run at the lowest real-time priority (see ``server.realtime``)."""
        self.host = host
        local = host in LOCAL_HOSTS
        # a token unless the view is on this machine's own address (tests may pass one)
        self.token = token if token is not None else (None if local
                                                      else secrets.token_urlsafe(16))
        self.stage: Stage | None = None
        self.dropped = 0  # frames dropped because the server process did not keep up
        self._pending = bytearray()
        self._threads: list[threading.Thread] = []
        self._closed = False
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[3])  # this livepiano, not another
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                         env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livepiano.live.view.server", host, str(port), realtime],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True)  # Ctrl-C is for the session; it ends with its stdin
        try:
            self.proc.stdin.write(json.dumps({"token": self.token, "knobs": True}).encode()
                                  + b"\n")
            self.proc.stdin.flush()
            answer = self._first_answer()
        except BaseException:
            self._end()
            raise
        if "error" in answer:
            self._end()
            raise LivepianoError(answer["error"])
        self.port = int(answer["listening"])
        os.set_blocking(self.proc.stdin.fileno(), False)

    def _first_answer(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not ({"listening", "error"} & set(answer)):
            raise LivepianoError(f"the view's server did not start within "
                                 f"{START_TIMEOUT_S:.0f} s; play without --view, or see "
                                 f"--log for why.")
        return answer

    @property
    def url(self) -> str:
        """The page's address as printed at start (with the token when one is needed)."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname() or host
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self, stage: Stage, prepare: Callable | None = None) -> None:
        """Feed ``stage``'s frames to the server and its changes to ``stage.knobs``: the view
        thread and the reader thread (``prepare`` runs first on each, e.g. to set their
        priority: both spend their time asleep)."""
        self.stage = stage
        stage.sink = self._write
        self._threads = [
            threading.Thread(target=stage.run, args=(prepare,), name="view", daemon=True),
            threading.Thread(target=self._read, args=(prepare,), name="view-reader",
                             daemon=True)]
        for t in self._threads:
            t.start()

    def _write(self, frame: bytes) -> None:
        """On the view thread: queue a whole frame (or drop it when too much waits) and write
        what the pipe takes now, never waiting for it."""
        if len(self._pending) > PENDING_MAX:
            self.dropped += 1
        else:
            self._pending += frame
        try:
            n = os.write(self.proc.stdin.fileno(), self._pending)
        except BlockingIOError:
            return
        except (OSError, ValueError):  # the server is gone
            self._pending.clear()
            return
        del self._pending[:n]

    def _read(self, prepare: Callable | None) -> None:
        """On the reader thread: the server's reports, until it ends."""
        if prepare is not None:
            try:
                prepare()
            except Exception:  # noqa: BLE001 - a plain thread then
                log.debug("the view's reader keeps its priority", exc_info=True)
        stage = self.stage
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
                if "pages" in message:
                    stage.pages = int(message["pages"])
                elif stage.knobs is None:
                    continue
                elif "set" in message:
                    stage.knobs.set(*message["set"])
                elif "press" in message:
                    stage.knobs.press(message["press"])
            except (ValueError, TypeError, LivepianoError):
                log.debug("the view's server said %r", line, exc_info=True)
        stage.pages = 0
        if not self._closed:
            log.warning("the view's server stopped; playing on without it.")

    def wait_for_page(self, timeout: float) -> None:
        """Until a page is open (a benchmark measures with one open), else a one-line
        ``LivepianoError``."""
        deadline = time.monotonic() + timeout
        while self.stage is None or not self.stage.pages:
            if time.monotonic() >= deadline:
                raise LivepianoError(f"no page opened {self.url} within {timeout:.0f} s; open "
                                     f"it in a browser, or leave out --view.")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop: the view thread, then the server (its pages' event streams end)."""
        self._closed = True
        if self.stage is not None:
            self.stage.stop()
        for t in self._threads[:1]:
            t.join(2.0)
        self._end()
        for t in self._threads[1:]:
            t.join(2.0)
        self._threads = []

    def _end(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(3.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(3.0)
        self.proc.stdout.close()


def serve(loop, scheduler, knobs=None, *, host: str = LOCAL_HOSTS[0], port: int = 8765,
          labels: dict | None = None, prepare: Callable | None = None,
          realtime: str = "off") -> ViewServer:
    """The view of a session or a benchmark, serving: its server process and its stage."""
    server = ViewServer(host, port, realtime=realtime)
    try:
        server.start(Stage(loop, scheduler, knobs, clock=loop.clock, labels=labels), prepare)
    except BaseException:
        server.close()
        raise
    return server
