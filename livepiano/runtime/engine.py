"""The play-time model: one onnxruntime session, the LSTM state, priming, sampling, scoring.

No torch here (the play path imports onnxruntime, numpy and yaml only).

    engine = Engine("models/performance_rnn.onnx", temperature=1.0, seed=1)
    engine.prime(player_tokens)     # one batched call, no sampling
    tok = engine.sample()           # one event, already fed back to the model

The engine keeps its view of the stream it has fed the model: the step count (10 ms steps),
the current velocity bin and the sounding voices, each with its start step and whether the
player (``prime``) or the engine (``sample``) started it. The model hears both in one stream;
a model that knows who played (its card and graph take a ``player`` input) also hears, beside
each event, whose it is: the player's notes as the other player's, the engine's own (and a
primer continued as the engine's own, ``prime(own=True)``) as its own; time-shifts belong to
both. A one-player model gets no such input.

Masks applied when sampling:
- a note-off is allowed only for a pitch the engine itself has sounding (a note-off of a silent
  pitch makes no sense; the player's held notes are released by the player);
- a note-on is allowed only inside ``pitch_range``;
- velocity events and time-shifts are always allowed, except that a time-shift may not carry an
  engine note past ``max_note_steps`` (nor go past ``shift_limit`` when that is set): when one
  of the engine's notes has sounded that long, ``sample`` returns (and feeds) its note-off
  instead of sampling;
- with ``notes_allowed`` False, no note-ons and no velocity events (they only set up a note):
  the model can only let its notes go and wait, e.g. a duet answer winding down.

On top of the masks, a sampling policy may shape the choice: ``steering`` (e.g.
``runtime.steering.DensitySteering``) adds an offset to the logits and hears every event fed,
its state part of ``snapshot``; ``top_p`` keeps only the nucleus.

Also here, for the offline commands: ``score_segments`` / ``evaluate`` (`livepiano eval`: NLL
of 30-second segments, batched and padded, each from a zero state), ``generate`` and
``describe_notes`` / ``describe_data`` (`livepiano generate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.core.players import OTHER, OWN
from livepiano.runtime.modelfile import model_feeds, model_shape, open_session, read_model_card
from livepiano.runtime.steering import truncate

# Fed when ``sample`` is called on a stream the model has heard nothing of: MAESTRO files
# start with a velocity event, and bin 16 is a middle velocity (61).
START_TOKEN = codec.velocity_event(16)
PLAYER, ENGINE = "player", "engine"
PRIME_PIECE = 8192  # tokens per call when priming a very long stream
# ``Engine.key_bias``: how hard a key steers the note-ons (1 = a pitch class's share of the key
# enters as a log-probability), and the share that an unused pitch class counts as (it
# bounds how far one is pushed down). Chosen with the duet's answers: see README, Duet.
KEY_BIAS_STRENGTH = 1.5
KEY_BIAS_FLOOR = 0.02


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Engine:
    """One onnxruntime session and one stream (see the module docstring). Not thread-safe:
    one thread owns it and calls prime/sample; ``temperature`` and ``control`` may be set
    from anywhere (plain attribute swaps) and apply from the next step."""

    def __init__(self, model_path: str | os.PathLike, *, temperature: float = 1.0,
                 seed: int | None = None,
                 pitch_range: tuple[int, int] = (codec.PIANO_LOW, codec.PIANO_HIGH),
                 max_note_steps: int = 5 * codec.STEPS_PER_SECOND, intra_op_threads: int = 1):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise LivepianoError(f"no model at {self.model_path}; "
                                 f"train one (README) or pass --model.")
        self.session = open_session(self.model_path, intra_op_threads)
        self.shape = model_shape(self.session, self.model_path)
        self.meta = read_model_card(self.model_path)
        vocab = (self.meta.get("vocabulary") or {}).get("size", codec.VOCAB_SIZE)
        if vocab != codec.VOCAB_SIZE:
            raise LivepianoError(f"{self.model_path.with_suffix('.yaml')} describes a vocabulary "
                                 f"of {vocab} events, not livepiano's {codec.VOCAB_SIZE}; "
                                 f"use a model exported by `livepiano export`.")
        self.layers, self.hidden = self.shape.layers, self.shape.hidden
        self.control_dim = self.shape.control_dim
        self.conditioned = self.control_dim > 0
        self.two_players = self.shape.two_players
        lo, hi = pitch_range
        if not 0 <= lo <= hi <= 127:
            raise LivepianoError(f"pitch range {lo}..{hi} is not inside 0..127; give LOW <= HIGH.")
        self.pitch_range = (int(lo), int(hi))
        if max_note_steps < 1:
            raise LivepianoError("max_note_steps must be at least 1 step (10 ms).")
        self.max_note_steps = int(max_note_steps)
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)
        # The longest time-shift ``sample`` may choose (steps), None for no limit beyond the
        # vocabulary's 100; e.g. to end a piece exactly on time.
        self.shift_limit: int | None = None
        self.notes_allowed = True
        self._control: np.ndarray | None = None
        self._zero_control = np.zeros(self.control_dim, np.float32)
        # The control as one step's input [1, 1, C]; replaced (never written into) on change.
        self._control_step = np.zeros((1, 1, self.control_dim), np.float32)
        # Added to the logits when sampling (note-ons by pitch class), None for none: see
        # ``key_bias``.
        self._bias: np.ndarray | None = None
        self._key: np.ndarray | None = None
        self._outputs = ["logits", "h_out", "c_out"]
        self._tok1 = np.zeros((1, 1), np.int64)
        self._own1 = np.full((1, 1), OWN, np.int64)
        # Note-ons outside the pitch range and every note-off are off unless a voice allows them.
        base = np.ones(codec.VOCAB_SIZE, bool)
        base[codec.NOTE_ON:codec.NOTE_ON + lo] = False
        base[codec.NOTE_ON + hi + 1:codec.NOTE_OFF] = False
        base[codec.NOTE_OFF:codec.TIME_SHIFT] = False
        self._base_mask = base
        # A sampling policy (``runtime.steering.DensitySteering`` or alike: ``logits_offset``,
        # ``heard``, ``reset``, ``snapshot``/``restore``), None for the model's own choices;
        # and the nucleus of the distribution sampled from (1.0: all of it).
        self.steering = None
        self.top_p = 1.0
        self.reset()
        # The first calls of a session allocate; make them here, not on the first live note
        # (the random generator is left as the seed made it).
        rng_state = self.rng.bit_generator.state
        self.prime([START_TOKEN] * 8)
        self.sample()
        self.prime([START_TOKEN] * 2)
        self.sample()
        self.reset()
        self.rng.bit_generator.state = rng_state

    # --- settings ------------------------------------------------------------------------

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = float(value)
        if not value >= 0.0:
            raise LivepianoError(f"temperature must be 0 or more, not {value}.")
        self._temperature = value

    @property
    def control(self) -> np.ndarray | None:
        return self._control

    @control.setter
    def control(self, value) -> None:
        if value is None:
            self._control = None
            self._control_step = np.zeros((1, 1, self.control_dim), np.float32)
            return
        if not self.conditioned:
            raise LivepianoError(f"{self.model_path.name} is an unconditioned model; it takes no "
                                 f"control vector (set control to None).")
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if arr.shape != (self.control_dim,):
            raise LivepianoError(f"a control vector for this model has {self.control_dim} values "
                                 f"({', '.join(self.control_layout or [])}), not {arr.size}.")
        self._control = arr.copy()
        self._control_step = arr.reshape(1, 1, -1).copy()

    @property
    def key_bias(self) -> np.ndarray | None:
        """The 12 pitch-class weights that steer note-ons (a copy), None when off."""
        return None if self._key is None else self._key.copy()

    @key_bias.setter
    def key_bias(self, weights) -> None:
        """Steer the note-ons toward pitch classes, e.g. the histogram of the player's call:
        each note-on's logit gets ``KEY_BIAS_STRENGTH * log((w + floor) / (max w + floor))``
        for its pitch class's share ``w``, so the most used class is untouched and an unused
        one is ``KEY_BIAS_FLOOR``-times-ish less likely. Timing, velocity and note-offs are the
        model's own, and so is its state: the bias acts only on what is sampled. None (or
        all-zero weights) turns it off."""
        if weights is None:
            self._key = self._bias = None
            return
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (12,) or not np.all(np.isfinite(w)) or (w < 0).any():
            raise LivepianoError("a key bias is 12 pitch-class weights, each 0 or more.")
        if w.sum() <= 0:
            self._key = self._bias = None
            return
        w = w / w.sum()
        per_class = KEY_BIAS_STRENGTH * np.log((w + KEY_BIAS_FLOOR) / (w.max() + KEY_BIAS_FLOOR))
        bias = np.zeros(codec.VOCAB_SIZE, np.float32)
        bias[codec.NOTE_ON:codec.NOTE_OFF] = per_class[np.arange(128) % 12]
        self._key, self._bias = w, bias

    @property
    def control_layout(self) -> list[str] | None:
        card = self.meta.get("control") if isinstance(self.meta, dict) else None
        if isinstance(card, dict) and card.get("layout"):
            return list(card["layout"])
        return list(codec.CONTROL_LAYOUT) if self.control_dim == codec.CONTROL_DIM else None

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Zero LSTM state and an empty stream."""
        shape = (self.layers, 1, self.hidden)
        self._h = np.zeros(shape, np.float32)
        self._c = np.zeros(shape, np.float32)
        self._logits: np.ndarray | None = None
        self._steps = 0
        self._events = 0
        self._velocity_bin = 0
        # pitch -> [start step, ...] oldest first, separately for the player and the engine
        self._player: dict[int, list[int]] = {}
        self._own: dict[int, list[int]] = {}
        # The engine's voices in the order they started (so the first is the oldest):
        # voice id -> (pitch, start step); and pitch -> its voice ids, oldest first.
        self._own_order: dict[int, tuple[int, int]] = {}
        self._own_ids: dict[int, list[int]] = {}
        self._next_voice = 0
        if self.steering is not None:
            self.steering.reset()
        # What sample may choose, kept up to date as voices start and end (time-shifts are
        # limited on top of this when a note is due).
        self._mask = self._base_mask.copy()

    def forget(self) -> None:
        """Zero the LSTM state and keep the view of the stream (the clock, the voices, the
        steering): what comes next is heard as from the start of a piece. The model learned
        from 30-second windows; over many minutes of one stream its state wanders where no
        window took it (a long duet's answers grew denser and denser)."""
        self._h = np.zeros_like(self._h)
        self._c = np.zeros_like(self._c)
        self._logits = None

    @property
    def steps(self) -> int:
        """10 ms steps elapsed in the stream."""
        return self._steps

    @property
    def seconds(self) -> float:
        return self._steps / codec.STEPS_PER_SECOND

    @property
    def events(self) -> int:
        """Events fed to the model since the last reset."""
        return self._events

    @property
    def velocity_bin(self) -> int:
        """The current velocity bin (1..32), 0 before any velocity event."""
        return self._velocity_bin

    @property
    def logits(self) -> np.ndarray | None:
        """The model's logits for the next event (a copy), None before anything was fed."""
        return None if self._logits is None else self._logits.copy()

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the LSTM state (h, c), each [layers, 1, hidden]."""
        return self._h.copy(), self._c.copy()

    def sounding(self, own_only: bool = False) -> list[int]:
        """Pitches sounding in the stream (the player's and the engine's, or only the engine's)."""
        pitches = set(p for p, v in self._own.items() if v)
        if not own_only:
            pitches.update(p for p, v in self._player.items() if v)
        return sorted(pitches)

    def voices(self) -> list[tuple[int, int, str]]:
        """(pitch, start step, PLAYER or ENGINE) of every sounding voice, oldest first."""
        out = [(p, s, PLAYER) for p, v in self._player.items() for s in v]
        out += [(p, s, ENGINE) for p, v in self._own.items() for s in v]
        return sorted(out, key=lambda x: (x[1], x[0]))

    # --- feeding -------------------------------------------------------------------------

    def _control_rows(self, batch: int, length: int) -> np.ndarray:
        ctl = self._control if self._control is not None else self._zero_control
        return np.broadcast_to(ctl, (batch, length, self.control_dim)).astype(np.float32)

    def _run(self, tokens: np.ndarray, player: np.ndarray) -> None:
        length = tokens.shape[1]
        control = None
        if self.conditioned:
            control = self._control_step if length == 1 else self._control_rows(1, length)
        feeds = model_feeds(self.shape, tokens, self._h, self._c, control, player)
        logits, self._h, self._c = self.session.run(self._outputs, feeds)
        self._logits = logits[0, -1]

    def _track(self, tok: int, who: str) -> None:
        self._events += 1
        if self.steering is not None:
            self.steering.heard(tok, self._steps, who == ENGINE)
        if tok < codec.NOTE_OFF:
            if who == ENGINE:
                self._own.setdefault(tok, []).append(self._steps)
                self._own_order[self._next_voice] = (tok, self._steps)
                self._own_ids.setdefault(tok, []).append(self._next_voice)
                self._next_voice += 1
                self._mask[codec.NOTE_OFF + tok] = True
            else:
                self._player.setdefault(tok, []).append(self._steps)
        elif tok < codec.TIME_SHIFT:
            pitch = tok - codec.NOTE_OFF
            voices = (self._own if who == ENGINE else self._player).get(pitch)
            if voices:
                voices.pop(0)
                if who == ENGINE:
                    del self._own_order[self._own_ids[pitch].pop(0)]
                    if not voices:
                        self._mask[tok] = False
        elif tok < codec.VELOCITY:
            self._steps += tok - codec.TIME_SHIFT + 1
        else:
            self._velocity_bin = tok - codec.VELOCITY + 1

    def prime(self, tokens: Iterable[int], own: bool = False) -> None:
        """Feed events in one batched call; no sampling. Updates the LSTM state, the logits
        for the next event and the view of the stream. The events are the player's, or with
        ``own`` the engine's own (a primer it continues: its notes are then the engine's to
        release, and a model that knows who played hears them as its own)."""
        arr = np.asarray(list(tokens) if not isinstance(tokens, np.ndarray) else tokens,
                         dtype=np.int64).reshape(-1)
        if not arr.size:
            return
        if arr.min() < 0 or arr.max() >= codec.VOCAB_SIZE:
            raise ValueError(f"token ids are 0..{codec.VOCAB_SIZE - 1}")
        flags = None
        if self.two_players:
            is_shift = (arr >= codec.TIME_SHIFT) & (arr < codec.VELOCITY)
            flags = np.where(is_shift | own, OWN, OTHER).astype(np.int64).reshape(1, -1)
        # One call for any phrase; a very long stream goes in pieces to bound the memory
        # the logits take (the state is carried, so the result is the same).
        for start in range(0, arr.size, PRIME_PIECE):
            self._run(arr[start:start + PRIME_PIECE].reshape(1, -1),
                      None if flags is None else flags[:, start:start + PRIME_PIECE])
        who = ENGINE if own else PLAYER
        for tok in arr.tolist():
            self._track(tok, who)

    def feed(self, token: int) -> None:
        """Feed one event as the engine's own (as ``sample`` does after choosing it)."""
        token = int(token)
        if not 0 <= token < codec.VOCAB_SIZE:
            raise ValueError(f"token ids are 0..{codec.VOCAB_SIZE - 1}")
        self._tok1[0, 0] = token
        self._run(self._tok1, self._own1)
        self._track(token, ENGINE)

    # --- sampling ------------------------------------------------------------------------

    def _overdue(self) -> tuple[int | None, int]:
        """(pitch of the engine's oldest voice if it has sounded max_note_steps, else None;
        steps left before the oldest voice is due)."""
        if not self._own_order:
            return None, codec.MAX_SHIFT_STEPS
        oldest_pitch, oldest_start = self._own_order[next(iter(self._own_order))]
        left = oldest_start + self.max_note_steps - self._steps
        return (oldest_pitch if left <= 0 else None), left

    def _allowed(self, left: int) -> np.ndarray:
        if self.shift_limit is not None:
            left = min(left, int(self.shift_limit))
        if left >= codec.MAX_SHIFT_STEPS and self.notes_allowed:
            return self._mask
        allowed = self._mask.copy()
        allowed[codec.TIME_SHIFT + max(left, 0):codec.VELOCITY] = False
        # (a shift limit of 0 with nothing sounding leaves no note-off or shift: notes stay)
        if not self.notes_allowed and allowed[codec.NOTE_OFF:codec.VELOCITY].any():
            allowed[codec.NOTE_ON:codec.NOTE_OFF] = False
            allowed[codec.VELOCITY:] = False
        return allowed

    def mask(self) -> np.ndarray:
        """The events ``sample`` may choose now (bool [388])."""
        return self._allowed(self._overdue()[1]).copy()

    def probabilities(self) -> np.ndarray:
        """The distribution ``sample`` draws from now: logits / temperature, masked (a
        forced note-off, when one is due, is not shown here)."""
        if self._logits is None:
            self.prime([START_TOKEN])
        allowed = self._allowed(self._overdue()[1])
        logits = self._logits.astype(np.float64)
        if self._bias is not None:
            logits = logits + self._bias
        if self.steering is not None and self.notes_allowed:
            logits = logits + self.steering.logits_offset(self._steps, update=False)
        p = np.zeros(codec.VOCAB_SIZE)
        if self._temperature == 0.0:
            p[int(np.argmax(np.where(allowed, logits, -np.inf)))] = 1.0
            return p
        z = np.where(allowed, logits / self._temperature, -np.inf)
        z -= z.max()
        np.exp(z, out=p)
        if self.top_p < 1.0:
            truncate(p, self.top_p)
        return p / p.sum()

    def sample(self) -> int:
        """The next event of the stream: sampled with temperature and masks (or a forced
        note-off), fed to the model, and returned."""
        if self._logits is None:
            self.prime([START_TOKEN])
        pitch, left = self._overdue()
        if pitch is not None:
            tok = codec.NOTE_OFF + pitch
        else:
            allowed = self._allowed(left)
            temperature = self._temperature
            logits = self._logits if self._bias is None else self._logits + self._bias
            if self.steering is not None and self.notes_allowed:
                # (winding down, only releases are left: they are the model's own)
                logits = logits + self.steering.logits_offset(self._steps)
            if temperature == 0.0:
                tok = int(np.argmax(np.where(allowed, logits, -np.inf)))
            else:
                z = np.where(allowed, logits * np.float32(1.0 / temperature),
                             np.float32(-np.inf))
                z -= z.max()
                np.exp(z, out=z)
                if self.top_p < 1.0:
                    truncate(z, self.top_p)
                cdf = np.cumsum(z)
                tok = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
                if tok >= codec.VOCAB_SIZE or not allowed[tok]:  # rounding at the cdf's end
                    tok = int(np.flatnonzero(allowed)[-1])
        self.feed(tok)
        return tok

    def release_all(self) -> list[int]:
        """Note-offs for every voice the engine has sounding, fed to the model (for the end
        of a piece); returns them."""
        out = []
        for pitch, _start, who in self.voices():
            if who == ENGINE:
                self.feed(codec.NOTE_OFF + pitch)
                out.append(codec.NOTE_OFF + pitch)
        return out

    # --- going back ------------------------------------------------------------------------

    def snapshot(self) -> "Snapshot":
        """Everything the stream has built up (LSTM state, logits, the view of the stream),
        to go back to with ``restore``: e.g. to take back look-ahead events that were never
        played. The random generator is not part of it."""
        return Snapshot(self._h.copy(), self._c.copy(),
                        None if self._logits is None else self._logits.copy(),
                        self._steps, self._events, self._velocity_bin,
                        {p: list(v) for p, v in self._player.items()},
                        {p: list(v) for p, v in self._own.items()},
                        dict(self._own_order), {p: list(v) for p, v in self._own_ids.items()},
                        self._next_voice, self._mask.copy(),
                        None if self.steering is None else self.steering.snapshot())

    def restore(self, snap: "Snapshot") -> None:
        """Back to a ``snapshot`` of this engine (it can be restored more than once)."""
        self._h, self._c = snap.h.copy(), snap.c.copy()
        self._logits = None if snap.logits is None else snap.logits.copy()
        self._steps, self._events, self._velocity_bin = snap.steps, snap.events, snap.velocity_bin
        self._player = {p: list(v) for p, v in snap.player.items()}
        self._own = {p: list(v) for p, v in snap.own.items()}
        self._own_order = dict(snap.own_order)
        self._own_ids = {p: list(v) for p, v in snap.own_ids.items()}
        self._next_voice = snap.next_voice
        self._mask = snap.mask.copy()
        if self.steering is not None and snap.steering is not None:
            self.steering.restore(snap.steering)


@dataclass(frozen=True)
class Snapshot:
    h: np.ndarray
    c: np.ndarray
    logits: np.ndarray | None
    steps: int
    events: int
    velocity_bin: int
    player: dict
    own: dict
    own_order: dict
    own_ids: dict
    next_voice: int
    mask: np.ndarray
    steering: object = None


# --- scoring --------------------------------------------------------------------------------

# --- offline generation -----------------------------------------------------------------------

