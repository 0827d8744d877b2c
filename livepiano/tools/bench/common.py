"""What the benchmarks share: real-time priority for the measuring thread, percentiles, the
model card's summary line."""

from __future__ import annotations

import os

# MAESTRO's mean rate of performance events (≈ 45 events/s): a 30-second priming chunk.
PRIME_CHUNK_TOKENS = 1350


def thread_realtime(on: bool) -> str:
    """SCHED_FIFO (priority 1) for the calling thread, or back to normal; what happened."""
    if not hasattr(os, "sched_setscheduler"):
        return "none (not available on this system)"
    try:
        if on:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "SCHED_FIFO 1"
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return "normal"
    except OSError as e:
        return f"none ({e.strerror or e})"


def percentiles(values_us: list[float]) -> tuple[float, float, float]:
    import numpy as np

    a = np.asarray(values_us, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def card_summary(path) -> str:
    """What the model's YAML card says of its training, for a benchmark's first line."""
    from livepiano.runtime.modelfile import read_model_card

    card = read_model_card(path)
    model, training = card.get("model") or {}, card.get("training") or {}
    nll = (card.get("evaluation") or {}).get("validation_nll")
    if not model:
        return ""
    return (f"  ({model.get('layers')}x{model.get('hidden')}, {training.get('epochs')} epochs, "
            f"validation NLL {nll})")

