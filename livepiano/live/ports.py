"""MIDI ports: which MIDI system (rtmidi API), listing, matching names, opening.

Users type what they see on the device, and devices name themselves inconsistently
(FluidSynth's ALSA client is ``FLUID Synth (1234)``, people type ``FluidSynth``). A name
matches a port when, lower-cased with spaces and punctuation removed, it is contained in the
port's name treated the same way; an exact name wins over every other match. None or several
matches end with one line that lists the ports there are.

rtmidi reports a missing MIDI system (no ``/dev/snd/seq``, no JACK server) by printing C
library text on stderr and raising ``SystemError``; here both become one ``LivepianoError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

from livepiano import LivepianoError
from livepiano.live.quiet import quiet_stderr
from livepiano.settings.choices import MIDI_APIS

log = logging.getLogger(__name__)

CLIENT_NAME = "livepiano"
API_ENV = "LIVEPIANO_MIDI_API"
INPROCESS = "inprocess"  # livepiano.live.inprocess: ports within this process (the demo's fallback)
BUILTIN = "builtin"  # --out builtin: the built-in synth on the default audio device


class PortError(LivepianoError):
    pass


def _rtmidi():
    import rtmidi

    return rtmidi


def _api_ids() -> dict[str, int]:
    rtmidi = _rtmidi()
    return {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
            "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}


def platform_api() -> str:
    if sys.platform.startswith("darwin"):
        return "coremidi"
    if sys.platform.startswith("win"):
        return "winmm"
    return "alsa"


def resolve_api(name: str | None = None) -> str:
    """The API to use: ``name``, else $LIVEPIANO_MIDI_API, else the platform's own; checked
    against what this rtmidi was built with."""
    if name == INPROCESS:
        return name
    source = "--api"
    if not name:
        name, source = os.environ.get(API_ENV) or None, API_ENV
    if not name:
        name, source = platform_api(), "the platform default"
    name = name.lower()
    if name not in MIDI_APIS:
        raise PortError(f"{source} is '{name}' but must be one of {', '.join(MIDI_APIS)}.")
    rtmidi = _rtmidi()
    compiled = [n for n, i in _api_ids().items() if i in rtmidi.get_compiled_api()]
    if name not in compiled:
        raise PortError(f"this python-rtmidi was built without {name} (it has "
                        f"{', '.join(compiled) or 'none'}); pick one of those with --api.")
    return name


_NO_SYSTEM_HINT = {
    "alsa": "no ALSA sequencer is reachable (is /dev/snd/seq there? in a container, "
            "pass the sound device in, or start a JACK server and use --api jack)",
    "jack": "no JACK server is running (start one, e.g. `jackd -S -d alsa`, or "
            "`jackd -S -d dummy` without a sound card; or use another --api)",
    "coremidi": "CoreMIDI refused to open a client",
    "winmm": "Windows MIDI refused to open a client",
}


def open_client(kind: str, api: str, name: str = CLIENT_NAME):
    """A ``rtmidi.MidiIn`` (kind 'in') or ``rtmidi.MidiOut`` (kind 'out') client, or the same
    of ``livepiano.live.inprocess`` for api 'inprocess'."""
    if api == INPROCESS:
        from livepiano.live import inprocess

        return (inprocess.MidiIn if kind == "in" else inprocess.MidiOut)(name)
    rtmidi = _rtmidi()
    cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    with quiet_stderr():
        try:
            return cls(_api_ids()[api], name=name)
        except (rtmidi.SystemError, RuntimeError, OSError):
            pass
    raise PortError(f"cannot open MIDI through {api}: {_NO_SYSTEM_HINT[api]}.")


def normalize(name: str) -> str:
    """Lower case without spaces and punctuation: 'FLUID Synth (128:0)' -> 'fluidsynth1280'."""
    return re.sub(r"[\W_]+", "", name.lower())


def match(query: str, names: list[str], kind: str = "port") -> int:
    """Index of the one port in ``names`` that ``query`` names; else a PortError listing
    ``names``. An exact name (then an exact normalised name) wins over substring matches."""
    for same in (lambda n: n == query, lambda n: n.lower() == query.lower(),
                 lambda n: normalize(n) == normalize(query)):
        hits = [i for i, n in enumerate(names) if same(n)]
        if len(hits) == 1:
            return hits[0]
    q = normalize(query)
    hits = [i for i, n in enumerate(names) if q and q in normalize(n)]
    if len(hits) == 1:
        return hits[0]
    listed = "; ".join(f"'{n}'" for n in names) or "none"
    if not hits:
        raise PortError(f"no MIDI {kind} port matches '{query}'; the {kind} ports are: {listed}.")
    several = "; ".join(f"'{names[i]}'" for i in hits)
    raise PortError(f"'{query}' matches several MIDI {kind} ports ({several}); "
                    f"type more of the name.")


def list_ports(api: str) -> tuple[list[str], list[str]]:
    """(input port names, output port names) of ``api``."""
    lister_in = open_client("in", api, CLIENT_NAME + "-list")
    lister_out = open_client("out", api, CLIENT_NAME + "-list")
    try:
        return lister_in.get_ports(), lister_out.get_ports()
    finally:
        lister_in.delete()
        lister_out.delete()


def own_port(name: str) -> bool:
    """Is this one of livepiano's own ports (never a match for --in/--out)?"""
    client = name.split(":", 1)[0].strip()
    return re.fullmatch(re.escape(CLIENT_NAME) + r"(-\d+|-list(-\d+)?|-guardian|-watch)?",
                        client) is not None


class Port:
    """One opened input or output: the rtmidi client, and the name it was opened by (or None
    for a virtual port), so that a watcher can tell when the port has gone and reopen it."""

    def __init__(self, kind: str, api: str, query: str | None, client_name: str = CLIENT_NAME):
        self.kind = kind
        self.query = query
        self.synth = None  # --out builtin: the built-in synth and its in-process port
        if kind == "out" and query is not None and normalize(query) == BUILTIN:
            api = INPROCESS
            self.synth = open_builtin_synth()
        self.api = api
        try:
            self.client = open_client(kind, api, client_name)
        except BaseException:
            self._close_synth()
            raise
        self.name: str | None = None  # the full name of the port we are connected to
        self._lister = None
        try:
            if query is None:
                self._open_virtual()
            else:
                self.open_matching()
        except BaseException:
            self._close_synth()
            raise

    def _open_virtual(self) -> None:
        try:
            self.client.open_virtual_port("in" if self.kind == "in" else "out")
        except (NotImplementedError, _rtmidi().RtMidiError):
            self.client.delete()
            raise PortError(f"{self.api} has no virtual ports; name a port with "
                            f"--{self.kind} (see `livepiano ports`).") from None
        self.name = None
        log.debug("%s: opened a virtual %s port", self.api, self.kind)

    def open_matching(self) -> str:
        names = self.client.get_ports()
        candidates = [i for i, n in enumerate(names) if not own_port(n)]
        i = candidates[match(self.query, [names[j] for j in candidates],
                             "input" if self.kind == "in" else "output")]
        self.client.open_port(i, "in" if self.kind == "in" else "out")
        self.name = names[i]
        log.debug("%s: opened %s port %r for %r", self.api, self.kind, self.name, self.query)
        return self.name

    def present(self) -> bool:
        """Is the port we opened by name still there? (Virtual ports always are.) Asked
        through a second client, because ALSA's sequencer handle is not safe to query from
        one thread while another sends on it."""
        if self.name is None:
            return True
        if self._lister is None:
            self._lister = open_client(self.kind, self.api, CLIENT_NAME + "-list")
        return self.name in self._lister.get_ports()

    def reopen(self) -> bool:
        """Reconnect to a port that vanished, once one matching the name is there again (its
        full name may have changed, e.g. ALSA's client number). True when connected."""
        if self.query is None:
            return True
        with contextlib.suppress(Exception):
            self.client.close_port()
        try:
            self.open_matching()
            return True
        except LivepianoError:
            return False

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"virtual port '{CLIENT_NAME}'"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close_port()
        for client in (self.client, self._lister):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.delete()
        self._close_synth()

    def _close_synth(self) -> None:
        if self.synth is not None:
            synth, port = self.synth
            self.synth = None
            port.delete()
            synth.close()


def open_builtin_synth():
    """(the built-in synth playing on the default audio device, the in-process input port
    'builtin:synth' that feeds it); one LivepianoError where there is no sound device."""
    from livepiano.live.audio import BuiltinSynth
    from livepiano.live.inprocess import MidiIn

    synth = BuiltinSynth().start()
    port = MidiIn(BUILTIN, deliver=synth.send_message)
    port.open_virtual_port("synth")
    return synth, port
