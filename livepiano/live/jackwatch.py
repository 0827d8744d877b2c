"""Knowing at once when the JACK server goes away, and keeping libjack quiet about it.

rtmidi gives no sign when the JACK server dies: its clients just stop, and libjack prints a
few lines per client on stderr. A JACK client of our own, opened through libjack with ctypes,
gets JACK's shutdown callback (on a JACK thread, a few ms after the server is gone); the
callback only sets an event and calls ``wake`` so the session's main thread notices. libjack's
error and info printers are replaced for the whole process (rtmidi's clients share the one
libjack) by ones that keep the last message for the session's line instead of printing it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Callable

_NO_START_SERVER = 0x01
_PRINTER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_SHUTDOWN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


_last_message = [""]


def _keep(message: bytes) -> None:
    _last_message[0] = (message or b"").decode("utf-8", "replace")


_QUIET = _PRINTER(_keep)  # installed in libjack for the rest of the process: never freed


def _loaded() -> list[str]:
    """The libjack files this process has loaded (python-rtmidi's wheel brings its own copy,
    which then holds its own error printer)."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split(None, 5)[5].strip() for line in f if len(line.split()) >= 6]
    except OSError:
        return []
    return list(dict.fromkeys(p for p in paths if "/libjack" in p and ".so" in p))


def _libjack():
    names = _loaded() + [ctypes.util.find_library("jack") or "libjack.so.0"]
    libs = []
    for name in names:
        try:
            libs.append(_declare(ctypes.CDLL(name)))
        except (OSError, AttributeError):
            pass
    for lib in libs:
        lib.jack_set_error_function(_QUIET)
        lib.jack_set_info_function(_QUIET)
    return libs[0] if libs else None


def _declare(lib):
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN, ctypes.c_void_p]
    lib.jack_activate.argtypes = [ctypes.c_void_p]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    lib.jack_set_error_function.argtypes = [_PRINTER]
    lib.jack_set_info_function.argtypes = [_PRINTER]
    return lib


class ServerWatch:
    """``ServerWatch.open(wake)``: None where libjack cannot be loaded or no server answers;
    else ``gone`` is set (and ``wake()`` called) when the server shuts down. ``close`` ends
    the watch client (not after the server is gone: there is nothing left to close)."""

    def __init__(self, lib, client: int, wake: Callable[[], None]):
        self._lib = lib
        self._client = client
        self.gone = threading.Event()
        self._wake = wake

        def on_shutdown(_arg) -> None:
            self.gone.set()
            self._wake()

        self._on_shutdown = _SHUTDOWN(on_shutdown)  # must outlive the client
        lib.jack_on_shutdown(ctypes.c_void_p(client), self._on_shutdown, None)
        lib.jack_activate(ctypes.c_void_p(client))

    @property
    def last_message(self) -> str:
        """What libjack last said (it is not printed)."""
        return _last_message[0]

    @classmethod
    def open(cls, wake: Callable[[], None], name: str = "livepiano-watch") -> "ServerWatch | None":
        lib = _libjack()
        if lib is None:
            return None
        status = ctypes.c_int()
        client = lib.jack_client_open(name.encode(), _NO_START_SERVER, ctypes.byref(status))
        if not client:
            return None
        return cls(lib, client, wake)

    def close(self) -> None:
        if self._client and not self.gone.is_set():
            self._lib.jack_client_close(ctypes.c_void_p(self._client))
        self._client = 0
