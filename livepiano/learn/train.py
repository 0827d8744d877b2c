"""Train Performance RNN on a token cache, in one process or many (torchrun).

    livepiano train CACHE -o checkpoints/run.pt [--minutes 60] [--hidden 512 --layers 3]
    torchrun --nproc_per_node N -m livepiano train CACHE -o checkpoints/run.pt ...

The loop, top to bottom: B lanes each stream windows of a performance (augmented on the
fly, each lane drawing from its own random generator); every iteration takes the next
``bptt`` tokens of each lane, carrying the LSTM state across chunks of the same window and
zeroing it when a lane starts a new window; Adam with gradient clipping under one
learning-rate schedule planned for the whole run; validation NLL on held-out segments at
intervals; checkpoints that hold everything needed to continue where it stopped (weights,
optimizer, every lane, random generators), written atomically.

Under torchrun each process holds its own block of the B lanes and DistributedDataParallel
averages the gradients; the loss is normalised by the tokens of the whole batch, so a step
is the same step whatever the number of processes, and a checkpoint (written by rank 0,
with every lane in it) resumes in one process or in many.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from livepiano import LivepianoError
from livepiano.core import codec
from livepiano.learn import checkpoint, dataset
from livepiano.learn.network import ModelConfig, PerformanceRNN
from livepiano.learn.plan import DECAYS, PLANS, TrainConfig, lr_at


def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) alone."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LivepianoError("--device cuda was asked for but torch sees no GPU; "
                                 "use --device cpu or auto.")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def _check(cfg: TrainConfig, world: int) -> None:
    if cfg.plan not in PLANS:
        raise LivepianoError(f"--plan must be one of {', '.join(PLANS)}, not {cfg.plan!r}.")
    if cfg.decay not in DECAYS:
        raise LivepianoError(f"--decay must be one of {', '.join(DECAYS)}, not {cfg.decay!r}.")
    if cfg.plan == "minutes" and not cfg.minutes:
        raise LivepianoError("--plan minutes spreads the schedule over --minutes; "
                             "give --minutes too.")
    if cfg.batch < 1 or cfg.bptt < 1 or cfg.window_tokens < 2:
        raise LivepianoError("--batch, --bptt and --window-tokens must be positive "
                             "(and a window at least 2 tokens).")
    if cfg.batch % world:
        raise LivepianoError(f"--batch {cfg.batch} is the whole batch over {world} processes; "
                             f"give a multiple of {world}.")
    if cfg.loader_workers is not None and cfg.loader_workers < 0:
        raise LivepianoError("--loader-workers is a number of processes; give 0 or more.")
    if not 0.0 <= cfg.warmup < 1.0:
        raise LivepianoError("--warmup is a share of the plan; give a number from 0 to below 1.")


def validation_segments(cache: dataset.TokenCache, count: int) -> list[np.ndarray]:
    """Up to ``count`` 30-second segments spread evenly over the validation split."""
    pieces = [s for f in cache.file_tokens("validation") for s in dataset.segments(f)]
    if not pieces:
        return []
    idx = np.linspace(0, len(pieces) - 1, num=min(count, len(pieces))).round().astype(int)
    return [pieces[i] for i in sorted(set(idx.tolist()))]


@torch.no_grad()
def nll_sum(model: PerformanceRNN, segments: list[np.ndarray], device,
            batch: int = 32) -> tuple[float, int]:
    """(summed NLL in nats, events scored) over ``segments``, each from a zero state and an
    all-zero control, scoring tokens[1:] given tokens[:-1]."""
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
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              reduction="none").view_as(mask)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    model.train(was_training)
    return total, count


class _Lane:
    """One lane of the batch: its random generator, its window, where it is in it, its
    control vector."""

    __slots__ = ("control", "pending", "position", "rng", "window")

    def __init__(self, seed: int, index: int):
        self.rng = np.random.default_rng([seed, index])
        self.window = None
        self.position = 0
        self.control = None
        self.pending = None  # the next window, being drawn ahead

    def used_up(self) -> bool:
        return self.window is None or self.position >= len(self.window) - 1

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "window": self.window,
                "position": self.position, "control": self.control}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.window, self.position = state["window"], state["position"]
        self.control = state["control"]


def train(cfg: TrainConfig, resume: bool = True, log=print) -> dict:
    """Train as ``cfg`` says, resuming from ``cfg.out`` when it exists and ``resume`` holds.
    Under torchrun (WORLD_SIZE > 1) this joins the process group, or uses the one already
    there. Returns step, tokens, val_nll, history and the trained model."""
    rank, world, local_rank = _world()
    owns_group = world > 1 and not dist.is_initialized()
    _check(cfg, world)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device, local_rank)
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        result = _train(cfg, resume, log if rank == 0 else (lambda *a, **k: None),
                        rank, world, device)
        if owns_group:
            # No rank tears its connections down while another may still be in a collective
            # (gloo then aborts that process).
            dist.barrier()
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, resume: bool, log, rank: int, world: int, device) -> dict:
    from tqdm import tqdm

    distributed = world > 1
    torch.manual_seed(cfg.seed + rank)
    if cfg.precision == "bf16" and device.type != "cuda":
        raise LivepianoError("--precision bf16 is for CUDA; on the CPU leave it at auto (float32).")
    amp = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cache = dataset.TokenCache(cfg.cache)
    flat = cache.tokens("train")
    files = cache.files("train")
    if not len(flat):
        raise LivepianoError(f"the cache {cfg.cache} has no training tokens; prepare a folder "
                             f"with MIDI files.")
    train_tokens = len(flat)
    steps = round(cfg.window_seconds * codec.STEPS_PER_SECOND)
    val = validation_segments(cache, cfg.eval_segments)
    my_val = val[rank::world]

    out = Path(cfg.out)
    state = None
    if resume and out.exists():
        state = checkpoint.read(out, "to resume from")
        if "world_size" not in state:
            raise LivepianoError(f"{out} was written by an earlier livepiano whose runs cannot be "
                                 f"resumed; start a new run from its weights with "
                                 f"`--init-from {out} -o NEW.pt`.")
        if "resume" not in state:
            raise LivepianoError(f"{out} holds weights only, not a run to resume; start a new "
                                 f"run from it with `--init-from {out} -o NEW.pt`.")
        mcfg = ModelConfig(**state["config"])
        log(f"resuming {out} at step {state['step']} ({state['tokens_seen']:,} tokens, "
            f"written by {state['world_size']} process(es))")
    init = None
    if state is None and cfg.init_from:
        init = checkpoint.read(cfg.init_from, "to start from")
        model = checkpoint.network(init, cfg.init_from, dropout=cfg.dropout)
        mcfg = model.config
    else:
        if state is None:
            mcfg = ModelConfig(embedding=cfg.embedding, hidden=cfg.hidden, layers=cfg.layers,
                               dropout=cfg.dropout,
                               control_dim=codec.CONTROL_DIM if cfg.conditioned else 0)
        model = PerformanceRNN(mcfg)
    model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)

    per_rank = cfg.batch // world
    mine = range(rank * per_rank, (rank + 1) * per_rank)
    lanes = [_Lane(cfg.seed, i) for i in mine]
    step, history, seconds_before = 0, [], 0.0
    # Tokens seen count the weights' whole life; the schedule counts from where this plan began.
    start_tokens = int(init.get("tokens_seen", init.get("tokens", 0))) if init else 0
    tokens = start_tokens
    h, c = model.zero_state(per_rank, device)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for group, wd in zip(opt.param_groups, (cfg.weight_decay, 0.0)):
            group["weight_decay"] = wd
        step, tokens = state["step"], state["tokens_seen"]
        history = state["meta"]["history"]
        start_tokens = state["meta"]["schedule"]["start_tokens"]
        r = state["resume"]
        seconds_before = r["seconds"]
        saved_lanes = r["lanes"]
        if len(saved_lanes) != cfg.batch:
            raise LivepianoError(f"{out} was trained with --batch {len(saved_lanes)}; "
                                 f"resume it with the same --batch.")
        for lane, i in zip(lanes, mine):
            lane.set_state(saved_lanes[i])
        h = r["h"][:, mine.start:mine.stop].to(device)
        c = r["c"][:, mine.start:mine.stop].to(device)
        # Dropout masks come from each process's own generator: carried over when the
        # number of processes is the same, drawn afresh (seeded by the step) when not.
        if r["world_size"] == world:
            torch.set_rng_state(r["torch_rng"][rank])
            if device.type == "cuda" and r.get("cuda_rng") and r["cuda_rng"][rank] is not None:
                torch.cuda.set_rng_state(r["cuda_rng"][rank])
        else:
            torch.manual_seed(cfg.seed + 7919 * step + rank)
    # Under autocast cuDNN runs the LSTM in float16 whatever the autocast type (the rest is
    # bf16), so gradients are scaled against underflow.
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    if state and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {mcfg.layers}x{mcfg.hidden} ({n_params / 1e6:.2f}M parameters, "
        f"{'conditioned' if mcfg.control_dim else 'unconditioned'}) on "
        f"{world} x {device.type}{' bf16' if amp else ''}; "
        f"train {train_tokens:,} tokens in {len(files)} files; {len(val)} validation segments"
        + (f"; weights from {cfg.init_from} ({start_tokens:,} tokens)" if init else ""))
    plan_tokens = cfg.epochs * train_tokens
    init_meta = (state["meta"].get("init_from") if state else
                 {"path": str(cfg.init_from), "tokens_seen": start_tokens} if init else None)
    plan_seconds = (cfg.minutes or 0) * 60

    workers = cfg.loader_workers
    if workers is None:
        workers = (0 if device.type != "cuda" else
                   max(1, min(8, (os.cpu_count() or 2) // world - 1)))
    windows = dataset.LaneWindows(cfg.cache, steps=steps, stretch=cfg.stretch,
                                  transpose=cfg.transpose, max_tokens=cfg.window_tokens,
                                  seed=cfg.seed, conditioned=bool(mcfg.control_dim),
                                  control_dropout=cfg.control_dropout, workers=workers)

    def new_window(lane: _Lane) -> None:
        lane.window, lane.control, after = lane.pending.result()
        lane.position = 0
        lane.rng.bit_generator.state = after
        lane.pending = windows.ahead(after)

    def gathered(obj):
        if not distributed:
            return [obj]
        bucket = [None] * world if rank == 0 else None
        dist.gather_object(obj, bucket, dst=0)
        return bucket

    def save_checkpoint(val_nll=None) -> None:
        mine_state = {"lanes": [lane.state() for lane in lanes],
                      "h": h.detach().float().cpu(), "c": c.detach().float().cpu(),
                      "torch_rng": torch.get_rng_state(),
                      "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None}
        parts = gathered(mine_state)
        if rank != 0:
            return
        payload = {
            "config": mcfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step, "tokens_seen": tokens, "world_size": world,
            "epochs": tokens / train_tokens,
            "meta": {"data": {"cache": str(cfg.cache), "source": cache.index.get("source"),
                              "train_files": len(files), "train_tokens": train_tokens},
                     "val_nll": val_nll if val_nll is not None else
                     (history[-1]["val_nll"] if history else None),
                     "history": history,
                     "schedule": {"start_tokens": start_tokens, "plan": cfg.plan,
                                  "plan_tokens": plan_tokens if cfg.plan == "epochs" else None,
                                  "plan_seconds": plan_seconds if cfg.plan == "minutes" else None,
                                  "lr": cfg.lr, "min_lr_ratio": cfg.min_lr_ratio,
                                  "warmup": cfg.warmup, "decay": cfg.decay},
                     "init_from": init_meta,
                     "augment": {"stretch": list(cfg.stretch), "transpose": cfg.transpose},
                     "control_dropout": cfg.control_dropout,
                     "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in asdict(cfg).items()}},
            "resume": {"world_size": world, "seconds": spent(),
                       "lanes": [lane for part in parts for lane in part["lanes"]],
                       "h": torch.cat([part["h"] for part in parts], dim=1),
                       "c": torch.cat([part["c"] for part in parts], dim=1),
                       "torch_rng": [part["torch_rng"] for part in parts],
                       "cuda_rng": [part["cuda_rng"] for part in parts]},
        }
        checkpoint.write(out, payload)

    def spent() -> float:
        return seconds_before + time.monotonic() - t_start

    def evaluate() -> float:
        total, count = nll_sum(model, my_val, device) if my_val else (0.0, 0)
        if distributed:
            both = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
            dist.all_reduce(both)
            total, count = float(both[0]), int(both[1])
        val_nll = total / count if count else float("nan")
        history.append({"step": step, "tokens": tokens, "val_nll": round(val_nll, 4),
                        "seconds": round(spent(), 1)})
        return val_nll

    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = "interrupted"

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t_start = time.monotonic()
    last_eval = last_ckpt = 0.0
    bar = tqdm(desc="train", unit="step", initial=step) if rank == 0 else None
    smooth = None
    rate_t, rate_tokens = t_start, tokens
    rate = 0.0
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext())
    x = np.zeros((per_rank, cfg.bptt), np.int64)
    y = np.zeros((per_rank, cfg.bptt), np.int64)
    m = np.zeros((per_rank, cfg.bptt), np.float32)
    model.train()
    try:
        while True:
            # Lanes whose window is used up start a new one with a fresh state.
            fresh = [i for i, lane in enumerate(lanes) if lane.used_up()]
            for i in fresh:  # all asked for before any is waited on
                if lanes[i].pending is None:
                    lanes[i].pending = windows.ahead(lanes[i].rng.bit_generator.state)
            for i in fresh:
                new_window(lanes[i])
            if fresh:
                h, c = h.clone(), c.clone()
                h[:, fresh] = 0.0
                c[:, fresh] = 0.0
            x.fill(0)
            y.fill(0)
            m.fill(0)
            for i, lane in enumerate(lanes):
                chunk = lane.window[lane.position:lane.position + cfg.bptt + 1]
                n = len(chunk) - 1
                x[i, :n], y[i, :n], m[i, :n] = chunk[:-1], chunk[1:], 1.0
            # Every process must agree on the batch's size, whether to stop and where the
            # schedule is (it may follow rank 0's clock), so they travel in one reduction.
            elapsed = time.monotonic() - t_start
            local_stop = 1.0 if stop["why"] else 0.0
            shared = torch.tensor([float(m.sum()), local_stop, elapsed if rank == 0 else 0.0],
                                  dtype=torch.float64)
            if distributed:
                shared = shared.to(device)
                dist.all_reduce(shared)
                shared = shared.cpu()
            batch_tokens, any_stop, elapsed = int(shared[0]), float(shared[1]) > 0, float(shared[2])
            if any_stop:
                stop["why"] = stop["why"] or "interrupted"
            elif cfg.max_steps is not None and step >= cfg.max_steps:
                stop["why"] = "max steps"
            elif cfg.minutes is not None and elapsed + (
                    seconds_before if cfg.plan == "minutes" else 0.0) >= cfg.minutes * 60:
                # A schedule over minutes counts the minutes of earlier runs of the plan.
                stop["why"] = "time budget"
            elif cfg.plan == "epochs" and tokens - start_tokens >= plan_tokens:
                stop["why"] = f"{cfg.epochs:g} epoch(s) done"
            if stop["why"]:
                break
            for i, lane in enumerate(lanes):
                lane.position += int(m[i].sum())
            progress = ((tokens - start_tokens) / plan_tokens if cfg.plan == "epochs"
                        else (seconds_before + elapsed) / plan_seconds)
            lr = lr_at(cfg, progress)
            for group in opt.param_groups:
                group["lr"] = lr
            xt, yt, mt = (torch.from_numpy(a).to(device, non_blocking=True) for a in (x, y, m))
            control = None
            if mcfg.control_dim:
                ctrl = torch.from_numpy(np.stack([lane.control for lane in lanes])).to(device)
                control = ctrl[:, None, :].expand(-1, cfg.bptt, -1)
            with autocast:
                logits, h, c = net(xt, h, c, control)
            h, c = h.detach(), c.detach()
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yt.reshape(-1),
                                  reduction="none")
            # DDP averages gradients over processes: scale so the step is that of the
            # whole batch's mean loss.
            loss = (nll * mt.reshape(-1)).sum() * world / max(batch_tokens, 1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            tokens += batch_tokens
            if bar is not None:
                lv = float((nll.detach() * mt.reshape(-1)).sum() / mt.sum().clamp(min=1))
                smooth = lv if smooth is None else 0.98 * smooth + 0.02 * lv
                now = time.monotonic()
                if now - rate_t >= 5:
                    rate = (tokens - rate_tokens) / (now - rate_t)
                    rate_t, rate_tokens = now, tokens
                bar.set_postfix_str(f"loss {smooth:.3f} | {rate:,.0f} tok/s | "
                                    f"{tokens / train_tokens:.3f} epochs | lr {lr:.2e}",
                                    refresh=False)
                bar.update(step - bar.n)
            if elapsed - last_eval >= cfg.eval_every_minutes * 60:
                v = evaluate()
                log(f"\nstep {step}: validation NLL {v:.4f} nats/event ({tokens:,} tokens)")
                last_eval = elapsed
            if elapsed - last_ckpt >= cfg.checkpoint_every_minutes * 60:
                save_checkpoint()
                last_ckpt = elapsed
    finally:
        windows.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    if bar is not None:
        bar.close()
    v = evaluate()
    save_checkpoint(v)
    log(f"stopped ({stop['why']}) at step {step}: {tokens:,} tokens "
        f"({tokens / train_tokens:.3f} epochs), validation NLL {v:.4f} nats/event; saved {out}")
    return {"step": step, "tokens": tokens, "val_nll": v, "history": history, "model": model}
