"""The training plan: every training default in one place, and the learning-rate schedule.

Free of torch, so the command line can show these defaults without importing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PLANS = ("epochs", "minutes")
DECAYS = ("cosine", "linear")


@dataclass
class TrainConfig:
    cache: str = "cache/maestro"
    out: str = "checkpoints/run.pt"
    init_from: str | None = None  # start from these weights, with a plan of its own
    widen: int | None = None  # with init_from: grow the hidden layers to this many units
    # model (ignored for the shape when resuming or starting from another checkpoint)
    hidden: int = 512
    layers: int = 3
    embedding: int = 256
    dropout: float = 0.1
    conditioned: bool = True
    control_dropout: float = 0.5  # share of windows trained with an all-zero control
    # a model that knows who played each event: the share of its windows played alone and
    # the share made duets (the rest: one hand beside the other); see dataset.PlayerMix
    two_players: bool = False
    solo_share: float = 0.4
    duet_share: float = 0.2
    # batches: lanes of windows, cut into chunks for truncated backprop; the batch is the
    # whole batch over all processes, each process holding batch / processes lanes
    batch: int = 64
    bptt: int = 128
    window_seconds: float = 30.0
    window_tokens: int = 4096  # a window's longest; Magenta cut its examples at 512
    stretch: tuple = (0.95, 1.05)
    transpose: int = 4
    # optimisation: one schedule for the whole run, warmup then decay to a floor
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: float = 0.02  # share of the plan spent rising to the peak rate
    decay: str = "cosine"
    weight_decay: float = 0.0
    clip: float = 1.0
    plan: str = "epochs"  # what the schedule spans: `epochs` of tokens, or the `minutes` budget
    epochs: float = 1.0
    # budget and bookkeeping
    minutes: float | None = None
    max_steps: int | None = None
    eval_every_minutes: float = 10.0
    eval_segments: int = 200
    checkpoint_every_minutes: float = 5.0
    seed: int = 1234
    device: str = "auto"  # auto: CUDA when there is a GPU, else the CPU
    precision: str = "auto"  # auto: bf16 autocast on CUDA or a CPU with native bf16, else float32
    threads: int | None = None  # torch CPU threads per process; None: the cores shared out
    loader_workers: int | None = None  # processes drawing windows ahead; None: some on CUDA


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1) through the plan: a linear rise from the
    floor to the peak over the warmup share, then a cosine or linear fall back to the floor,
    which it keeps past the end."""
    floor = cfg.lr * cfg.min_lr_ratio
    p = min(1.0, max(0.0, progress))
    if cfg.warmup > 0 and p < cfg.warmup:
        return floor + (cfg.lr - floor) * p / cfg.warmup
    fall = (p - cfg.warmup) / (1.0 - cfg.warmup) if cfg.warmup < 1 else 1.0
    shape = 0.5 * (1 + math.cos(math.pi * fall)) if cfg.decay == "cosine" else 1.0 - fall
    return floor + (cfg.lr - floor) * shape
