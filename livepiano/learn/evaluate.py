"""Evaluating a model on data: negative log-likelihood per event over 30-second segments of a
token cache's split or a folder of MIDI files, through onnxruntime (no torch here), and the
musical figures of real playing (``describe_data``) that samples are compared with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.runtime.engine import log_softmax
from livepiano.runtime.modelfile import model_feeds, model_shape, open_session, resolve_model
from livepiano.runtime.offline import describe_notes


def score_segments(session, segments: Sequence[np.ndarray], *, batch: int = 16, chunk: int = 512,
                   progress=None) -> tuple[float, int]:
    """(total NLL in nats, events scored) of segments, each from a zero state, scoring
    tokens[1:] given tokens[:-1]. Segments go ``batch`` at a time (sorted by length, padded,
    the padding masked), in chunks of ``chunk`` steps with the state carried. A conditioned
    model gets an all-zero control (unconditioned), a model that knows who played hears every
    event as its own."""
    shape = model_shape(session)
    order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
    total, events, done = 0.0, 0, 0
    outputs = ["logits", "h_out", "c_out"]
    for start in range(0, len(order), batch):
        group = [np.asarray(segments[i], dtype=np.int64) for i in order[start:start + batch]]
        group = [g for g in group if len(g) > 1]
        if not group:
            continue
        b = len(group)
        length = max(len(g) for g in group) - 1
        x = np.zeros((b, length), np.int64)
        y = np.zeros((b, length), np.int64)
        valid = np.zeros((b, length), bool)
        for i, g in enumerate(group):
            x[i, :len(g) - 1] = g[:-1]
            y[i, :len(g) - 1] = g[1:]
            valid[i, :len(g) - 1] = True
        h = np.zeros((shape.layers, b, shape.hidden), np.float32)
        c = np.zeros_like(h)
        for t0 in range(0, length, chunk):
            feeds = model_feeds(shape, x[:, t0:t0 + chunk], h, c)
            logits, h, c = session.run(outputs, feeds)
            logp = log_softmax(logits.astype(np.float64))
            picked = np.take_along_axis(logp, y[:, t0:t0 + chunk, None], axis=-1)[..., 0]
            m = valid[:, t0:t0 + chunk]
            total -= float(picked[m].sum())
            events += int(m.sum())
        done += b
        if progress:
            progress(done, events, total)
    return total, events


@dataclass
class EvalResult:
    files: int
    segments: int
    events: int
    nll: float
    source: str
    split: str | None

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll))

    def to_dict(self) -> dict:
        return {"files": self.files, "segments": self.segments, "events": self.events,
                "nll": round(self.nll, 4), "perplexity": round(self.perplexity, 3),
                "data": self.source, "split": self.split}


def load_eval_tokens(data_path: str | os.PathLike, split: str | None = "test",
                     limit: int | None = None) -> tuple[list[np.ndarray], str | None]:
    """Token arrays of the files to evaluate and the split they come from: from a token
    cache (its split), or from a folder of MIDI files (the split of a MAESTRO CSV in it when
    there is one, else every file). ``limit`` keeps the first N files."""
    from livepiano.core import midifile
    from livepiano.learn import dataset

    root = Path(data_path)
    if (root / "index.json").is_file():
        cache = dataset.TokenCache(root)
        split = split or "test"
        arrays = cache.file_tokens(split)
        if not arrays:
            raise LivepianoError(f"the {split} split of {root} has no files; "
                                 f"pick another with --split.")
        return (arrays[:limit] if limit else arrays), split
    if not root.is_dir():
        raise LivepianoError(f"{root} is neither a token cache nor a folder of MIDI files; "
                             f"give one of those.")
    files = dataset.find_midi_files(root)
    if not files:
        raise LivepianoError(f"no token cache (index.json) and no .mid/.midi files under {root}; "
                             f"give a cache made by `livepiano prepare` or a folder of MIDI files.")
    splits = dataset.maestro_splits(root)
    used_split = None
    if splits is not None and split:
        names = {p: p.relative_to(root).as_posix() for p in files}
        files = [p for p in files if splits.get(names[p]) == split]
        used_split = split
        if not files:
            raise LivepianoError(f"the MAESTRO CSV in {root} lists no {split} files that are here; "
                                 f"pick another with --split.")
    if limit:
        files = files[:limit]
    arrays = []
    for p in files:
        try:
            toks = midifile.midi_file_tokens(p)
        except codec.CodecError:
            continue
        if len(toks) > 1:
            arrays.append(np.asarray(toks, dtype=np.int64))
    if not arrays:
        raise LivepianoError(f"none of the MIDI files under {root} could be read; "
                             f"check the folder.")
    return arrays, used_split


def evaluate(model_path: str | os.PathLike, data_path: str | os.PathLike, *,
             split: str | None = "test",
             limit: int | None = None, batch: int = 16, chunk: int = 512, threads: int = 1,
             progress: bool = False) -> EvalResult:
    """Mean NLL (nats per event) of an exported model over the 30-second segments of a
    cache split or a folder of MIDI files, each segment from a zero state."""
    from livepiano.learn import dataset

    arrays, used_split = load_eval_tokens(data_path, split, limit)
    segs = [s for a in arrays for s in dataset.segments(a)]
    if not segs:
        raise LivepianoError(f"{data_path} holds no segment of two events or more to score.")
    session = open_session(resolve_model(model_path), threads)
    bar = tqdm(total=len(segs), desc="eval", unit="segment", disable=not progress)

    def show(done: int, events: int, total: float) -> None:
        bar.set_postfix_str(f"nll {total / max(events, 1):.3f}", refresh=False)
        bar.update(done - bar.n)

    total, events = score_segments(session, segs, batch=batch, chunk=chunk,
                                   progress=show if progress else None)
    bar.close()
    return EvalResult(len(arrays), len(segs), events, total / events, str(data_path), used_split)


def describe_data(data_path: str | os.PathLike, split: str | None = "test", limit: int | None = 30,
                  min_seconds: float = 10.0) -> dict:
    """The figures of ``describe_notes`` for real playing: the median over the 30-second
    segments (of at least ``min_seconds``) of a cache split or a folder of MIDI files, so
    that a generated piece can be set beside them."""
    from livepiano.learn import dataset

    arrays, used_split = load_eval_tokens(data_path, split, limit)
    rows = []
    for tokens in arrays:
        tokens = np.asarray(tokens, dtype=np.int64)
        # The velocity bin in force before each token (0 before the first velocity event).
        is_vel = tokens >= codec.VELOCITY
        last = np.maximum.accumulate(np.where(is_vel, np.arange(len(tokens)), -1))
        bins = np.where(last >= 0, tokens[np.maximum(last, 0)] - codec.VELOCITY + 1, 0)
        # The pieces of data.segments, with their offsets.
        piece = dataset.elapsed_steps(tokens)[:-1] // dataset.SEGMENT_STEPS
        cuts = (np.flatnonzero(np.diff(piece)) + 1).tolist()
        for a, b in zip([0] + cuts, cuts + [len(tokens)]):
            seg = tokens[a:b]
            seconds = codec.duration_steps(seg.tolist()) / codec.STEPS_PER_SECOND
            if len(seg) < 2 or seconds < min_seconds:
                continue
            lead = [codec.velocity_event(int(bins[a - 1]))] if a > 0 and bins[a - 1] else []
            # A segment starts mid-piece: it gets the velocity in force at its start.
            d = describe_notes(codec.tokens_to_step_notes(lead + seg.tolist()), seconds)
            if d["notes"]:
                rows.append(d)
    if not rows:
        raise LivepianoError(f"{data_path} holds no 30-second segment with notes to describe.")
    keys = ("notes_per_s", "pitch_min", "pitch_max", "velocity_min", "velocity_max", "velocity_std")
    out = {k: round(float(np.median([r[k] for r in rows])), 2) for k in keys}
    out.update({"segments": len(rows), "files": len(arrays), "split": used_split})
    return out

