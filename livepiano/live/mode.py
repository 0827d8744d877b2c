"""When the model may play: the ``Mode`` hooks the engine loop calls, and ``Continuous``, the
mode that plays all the time and listens to what you play. Modes run on the engine thread.

A mode is handed its loop (``attach``) and reaches the engine, the scheduler and the clock
through it; it never imports the loop's module (the loop builds on modes, not the other way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from livepiano.runtime.steering import Listening, alone_density

if TYPE_CHECKING:
    from livepiano.live.listener import PlayerEvent


class Mode:
    """When the model may play. The engine loop asks ``may_generate(now)`` before each sample
    and tells ``heard(events, now)`` about the player's events; modes that take turns (the
    duet) answer differently."""

    name = "?"

    def may_generate(self, now: float) -> bool:
        raise NotImplementedError

    def heard(self, events: list[PlayerEvent], now: float) -> None:
        pass

    # Hooks for modes that take turns (the duet); these defaults are continuous mode's.
    takes_back = True  # the loop takes back the look-ahead when the player plays

    def attach(self, loop) -> None:
        """The loop this mode drives (called from the loop's constructor, and when the mode
        knob switches modes): no leftover limit on the model's time-shifts, the loop's own
        look-ahead (the duet lengthens it while it samples an answer's opening)."""
        loop.engine.shift_limit = None
        loop.restore_lookahead()

    def tick(self, now: float) -> None:
        """Time has reached ``now`` (after each drain of the inbox)."""

    def idle_wait(self, now: float) -> float:
        """How long to wait on the inbox while ``may_generate`` is false."""
        return 0.005

    def sampled(self, token: int, deadline: float, before) -> bool:
        """The model sampled ``token`` (``deadline``: its stream time; ``before``: the engine's
        snapshot from before it); False drops it (the mode restored the engine)."""
        return True

    def pedal(self, down: bool, t: float) -> None:
        """The player's sustain pedal went down or up at ``t``."""

    def end_of_call(self, t: float) -> None:
        """The player's end-of-call control was pressed at ``t``."""

    def shown(self, now: float) -> dict:
        """What an observer (the stage view) may show of this mode at ``now``, beyond its
        name; called on the engine thread."""
        return {}

    def detach(self, loop) -> None:
        """Another mode takes over the loop (the mode knob): leave the engine as found."""


# How often continuous mode lets go of notes heard too long ago when nothing new comes.
FORGET_EVERY_S = 0.1


class Continuous(Mode):
    """The model plays all the time and hears you. Listening (the ``listen`` setting, on by
    default; ``steering.Listening``): its note-ons lean toward the pitch classes you played in
    the last second and those still sounding (``Engine.key_bias``, as a duet answer leans
    toward its call), and a conditioned model's control carries your density and pitch
    classes of the last few seconds -- the ``density`` set by the user (setting or knob) and
    a key set on the key knob win over yours. Updated when you play (and every
    FORGET_EVERY_S as old notes drop out), never per sampled event."""

    name = "continuous"

    def __init__(self, listen: bool = False, density: float | None = None):
        self.listening = Listening(density) if listen else None
        self.loop = None
        self._alone = alone_density({"density": density})
        self._due = 0.0
        self._found: tuple | None = None  # the engine's (control, key bias) before listening
        self._controlled = False  # the session gives the model a control to steer

    @classmethod
    def from_settings(cls, s: dict, say=None) -> "Continuous":
        """From a play session's settings (``schema.SCHEMA``)."""
        return cls(listen=bool(s.get("listen", True)), density=s.get("density"))

    def attach(self, loop) -> None:
        super().attach(loop)
        self.loop = loop
        engine = loop.engine
        if self.listening is not None:
            self._found = (engine.control, engine.key_bias)
            self._controlled = bool(engine.conditioned) and engine.control is not None
            self._due = 0.0

    def detach(self, loop) -> None:
        if self._found is not None:
            loop.engine.control, loop.engine.key_bias = self._found
            self._found = None

    def may_generate(self, now: float) -> bool:
        return True

    def heard(self, events: list[PlayerEvent], now: float) -> None:
        listening = self.listening
        if listening is None:
            return
        for ev in events:
            listening.hear(ev.time, ev.pitch, ev.on)
        if events:
            self.listen(now)

    def tick(self, now: float) -> None:
        if self.listening is not None and now >= self._due:
            self._due = now + FORGET_EVERY_S
            if self.listening.forget(now):
                self.listen(now)

    def listen(self, now: float) -> None:
        """The engine's lean and control from what has been heard (and set) by ``now``."""
        listening, engine = self.listening, self.loop.engine
        self._due = now + FORGET_EVERY_S
        listening.forget(now)
        engine.key_bias = listening.lean()
        if self._controlled:
            alone = engine.steering.target if engine.steering is not None else self._alone
            engine.control = listening.control(now, alone)


