"""When the model may play: the ``Mode`` hooks the engine loop calls, and ``Continuous``, the
mode that plays all the time. Modes run on the engine thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from livepiano.live.listener import PlayerEvent
    from livepiano.live.loop import EngineLoop


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

    def attach(self, loop: "EngineLoop") -> None:
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


class Continuous(Mode):
    """The model plays all the time and hears you."""

    name = "continuous"

    def may_generate(self, now: float) -> bool:
        return True


