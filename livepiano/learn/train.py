"""Train Performance RNN on a token cache.

    livepiano train CACHE -o checkpoints/run.pt [--minutes 60] [--hidden 512 --layers 3]

The loop, top to bottom: B lanes each stream 30-second windows (augmented on the fly);
every iteration takes the next ``bptt`` tokens of each lane, carrying the LSTM state
across chunks of the same window and zeroing it when a lane starts a new window; Adam
with gradient clipping; validation NLL on held-out 30-second segments at intervals;
checkpoints that hold everything needed to continue exactly where it stopped (weights,
optimizer, lanes, random generators), written atomically.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.learn import dataset
from livepiano.learn.network import ModelConfig, PerformanceRNN


@dataclass
class TrainConfig:
    cache: str = "cache/maestro"
    out: str = "checkpoints/run.pt"
    # model
    hidden: int = 512
    layers: int = 3
    embedding: int = 256
    dropout: float = 0.1
    conditioned: bool = True
    control_dropout: float = 0.5  # share of windows trained with an all-zero control
    # batches: lanes of 30-second windows, cut into chunks for truncated backprop
    batch: int = 32
    bptt: int = 256
    max_window_tokens: int = 4096
    stretch: tuple = (0.95, 1.05)
    transpose: int = 4
    # optimisation
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    epochs: float = 1.0  # the cosine schedule spans this many passes over the train tokens
    clip: float = 1.0
    # budget and bookkeeping
    minutes: float | None = None
    max_steps: int | None = None
    eval_every_minutes: float = 10.0
    eval_segments: int = 200
    checkpoint_every_minutes: float = 5.0
    seed: int = 1234
    device: str = "auto"
    threads: int | None = None


@dataclass
class Lanes:
    """Where each lane of the batch is: its window, its position in it, its control."""
    windows: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    controls: list = field(default_factory=list)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(cfg: TrainConfig, tokens: int, train_tokens: int) -> float:
    frac = min(1.0, tokens / max(1.0, cfg.epochs * train_tokens))
    cosine = 0.5 * (1 + math.cos(math.pi * frac))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def validation_segments(cache: dataset.TokenCache, count: int) -> list[np.ndarray]:
    """Up to ``count`` 30-second segments spread evenly over the validation split."""
    pieces = [s for f in cache.file_tokens("validation") for s in dataset.segments(f)]
    if not pieces:
        return []
    idx = np.linspace(0, len(pieces) - 1, num=min(count, len(pieces))).round().astype(int)
    return [pieces[i] for i in sorted(set(idx.tolist()))]


@torch.no_grad()
def mean_nll(model: PerformanceRNN, segments: list[np.ndarray], device, batch: int = 32) -> float:
    """Nats per event, each segment from a zero state and an all-zero control,
    scoring tokens[1:] given tokens[:-1]."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
    for start in range(0, len(order), batch):
        group = [segments[i] for i in order[start:start + batch]]
        longest = max(len(s) for s in group)
        x = torch.zeros(len(group), longest, dtype=torch.long)
        mask = torch.zeros(len(group), longest - 1, dtype=torch.bool)
        for i, s in enumerate(group):
            x[i, :len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
            mask[i, :len(s) - 1] = True
        x, mask = x.to(device), mask.to(device)
        h, c = model.zero_state(len(group), device)
        logits, _, _ = model(x[:, :-1], h, c)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              reduction="none").view_as(mask)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    model.train(was_training)
    return total / max(count, 1)


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint behind


def train(cfg: TrainConfig, resume: bool = True, log=print) -> dict:
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    cache = dataset.TokenCache(cfg.cache)
    flat = cache.tokens("train")
    files = cache.files("train")
    if not len(flat):
        raise LivepianoError(f"the cache {cfg.cache} has no training tokens; prepare a folder "
                             f"with MIDI files.")
    train_tokens = int(len(flat))
    sampler = dataset.WindowSampler(flat, files, seed=cfg.seed, stretch=cfg.stretch,
                                 transpose=cfg.transpose, max_tokens=cfg.max_window_tokens)
    val = validation_segments(cache, cfg.eval_segments)

    mcfg = ModelConfig(embedding=cfg.embedding, hidden=cfg.hidden, layers=cfg.layers,
                       dropout=cfg.dropout, control_dim=codec.CONTROL_DIM if cfg.conditioned else 0)
    out = Path(cfg.out)
    state = None
    if resume and out.exists():
        state = torch.load(out, map_location="cpu", weights_only=False)
        mcfg = ModelConfig(**state["config"])
        log(f"resuming {out} at step {state['step']} ({state['tokens']:,} tokens)")
    model = PerformanceRNN(mcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ctrl_rng = np.random.default_rng(cfg.seed + 1)
    step, tokens, history = 0, 0, []
    h, c = model.zero_state(cfg.batch, device)
    lanes = Lanes()
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, tokens, history = state["step"], state["tokens"], state["meta"]["history"]
        resume_state = state["resume"]
        sampler.set_state(resume_state["sampler"])
        ctrl_rng.bit_generator.state = resume_state["control_rng"]
        torch.set_rng_state(resume_state["torch_rng"])
        lanes = Lanes(**resume_state["lanes"])
        h, c = resume_state["h"].to(device), resume_state["c"].to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {mcfg.layers}x{mcfg.hidden} ({n_params / 1e6:.2f}M parameters, "
        f"{'conditioned' if mcfg.control_dim else 'unconditioned'}) on {device}; "
        f"train {train_tokens:,} tokens in {len(files)} files; {len(val)} validation segments")

    def new_window(i: int) -> None:
        w = sampler.window()
        ctrl = codec.control_vector(w) if mcfg.control_dim else np.zeros(0, np.float32)
        if mcfg.control_dim and ctrl_rng.random() < cfg.control_dropout:
            ctrl = np.zeros_like(ctrl)
        if i < len(lanes.windows):
            lanes.windows[i], lanes.positions[i], lanes.controls[i] = w, 0, ctrl
        else:
            lanes.windows.append(w)
            lanes.positions.append(0)
            lanes.controls.append(ctrl)

    def checkpoint(val_nll=None) -> None:
        payload = {
            "config": mcfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "step": step, "tokens": tokens, "epochs": tokens / train_tokens,
            "meta": {"data": {"cache": str(cfg.cache), "source": cache.index.get("source"),
                              "train_files": len(files), "train_tokens": train_tokens},
                     "val_nll": val_nll if val_nll is not None else
                     (history[-1]["val_nll"] if history else None),
                     "history": history,
                     "augment": {"stretch": list(cfg.stretch), "transpose": cfg.transpose},
                     "control_dropout": cfg.control_dropout,
                     "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in asdict(cfg).items()}},
            "resume": {"sampler": sampler.state(), "control_rng": ctrl_rng.bit_generator.state,
                       "torch_rng": torch.get_rng_state(), "lanes": asdict(lanes),
                       "h": h.detach().cpu(), "c": c.detach().cpu()},
        }
        _save(out, payload)

    def evaluate() -> float:
        val_nll = mean_nll(model, val, device) if val else float("nan")
        history.append({"step": step, "tokens": tokens, "val_nll": round(val_nll, 4),
                        "seconds": round(time.monotonic() - t_start + spent_before, 1)})
        return val_nll

    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = "interrupted"

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    spent_before = history[-1]["seconds"] if history else 0.0
    t_start = time.monotonic()
    last_eval = last_ckpt = t_start
    bar = tqdm(desc="train", unit="step", initial=step)
    smooth = None
    rate_t, rate_tokens = t_start, tokens
    rate = 0.0
    model.train()
    try:
        while True:
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop["why"] = "max steps"
            if cfg.minutes is not None and time.monotonic() - t_start >= cfg.minutes * 60:
                stop["why"] = "time budget"
            if tokens >= cfg.epochs * train_tokens:
                stop["why"] = f"{cfg.epochs:g} epoch(s) done"
            if stop["why"]:
                break
            # Lanes whose window is used up start a new one with a fresh state.
            fresh = []
            for i in range(cfg.batch):
                if i >= len(lanes.windows) or lanes.positions[i] >= len(lanes.windows[i]) - 1:
                    new_window(i)
                    fresh.append(i)
            if fresh:
                h, c = h.clone(), c.clone()
                h[:, fresh] = 0.0
                c[:, fresh] = 0.0
            x = np.zeros((cfg.batch, cfg.bptt), np.int64)
            y = np.zeros((cfg.batch, cfg.bptt), np.int64)
            m = np.zeros((cfg.batch, cfg.bptt), np.float32)
            for i in range(cfg.batch):
                w, p = lanes.windows[i], lanes.positions[i]
                chunk = w[p:p + cfg.bptt + 1]
                n = len(chunk) - 1
                x[i, :n], y[i, :n], m[i, :n] = chunk[:-1], chunk[1:], 1.0
                lanes.positions[i] = p + n
            xt, yt, mt = (torch.from_numpy(a).to(device) for a in (x, y, m))
            control = None
            if mcfg.control_dim:
                ctrl = torch.from_numpy(np.stack(lanes.controls)).to(device)
                control = ctrl[:, None, :].expand(-1, cfg.bptt, -1)
            lr = lr_at(cfg, tokens, train_tokens)
            for group in opt.param_groups:
                group["lr"] = lr
            logits, h, c = model(xt, h, c, control)
            h, c = h.detach(), c.detach()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1),
                                  reduction="none")
            loss = (nll * mt.reshape(-1)).sum() / mt.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            step += 1
            tokens += int(m.sum())
            lv = float(loss.detach())
            smooth = lv if smooth is None else 0.98 * smooth + 0.02 * lv
            now = time.monotonic()
            if now - rate_t >= 5:
                rate = (tokens - rate_tokens) / (now - rate_t)
                rate_t, rate_tokens = now, tokens
            bar.set_postfix_str(f"loss {smooth:.3f} | {rate:,.0f} tok/s | "
                                f"{tokens / train_tokens:.3f} epochs | lr {lr:.2e}", refresh=False)
            bar.update(step - bar.n)
            if now - last_eval >= cfg.eval_every_minutes * 60:
                v = evaluate()
                log(f"\nstep {step}: validation NLL {v:.4f} nats/event ({tokens:,} tokens)")
                last_eval = time.monotonic()
            if now - last_ckpt >= cfg.checkpoint_every_minutes * 60:
                checkpoint()
                last_ckpt = time.monotonic()
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    bar.close()
    v = evaluate()
    checkpoint(v)
    log(f"stopped ({stop['why']}) at step {step}: {tokens:,} tokens "
        f"({tokens / train_tokens:.3f} epochs), validation NLL {v:.4f} nats/event; saved {out}")
    return {"step": step, "tokens": tokens, "val_nll": v, "history": history}
