"""Train Performance RNN on a token cache, in one process or many (torchrun).

    livepiano train CACHE -o checkpoints/run.pt [--minutes 60] [--hidden 512 --layers 3]
    torchrun --nproc_per_node N -m livepiano train CACHE -o checkpoints/run.pt ...

The loop, top to bottom (``_train``): set up the run (``Run``: data, network, optimizer, and
the state of an earlier run when it resumes one); then, until the plan is done, take the next
batch (B lanes each stream windows of a performance, augmented on the fly, each lane drawing
from its own random generator; every batch is the next ``bptt`` tokens of each lane, the LSTM
state carried across chunks of a window and zeroed when a lane starts a new one), take one
AdamW step with gradient clipping at the rate one schedule planned for the whole run gives,
and at intervals score the validation segments and write a checkpoint that holds everything
needed to continue where it stopped (weights, optimizer, every lane, random generators),
atomically.

Precision: under ``--precision auto`` the forward and backward passes run under bf16
autocast where the device computes bf16 natively (CUDA, or a CPU with AVX-512 BF16 or AMX);
the master weights, the optimizer and the loss stay float32. A model that knows who played
(``--two-players``) is scored on its own events only: the other player's are heard, not
predicted.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from livepiano import LivepianoError
from livepiano.core import codec, players
from livepiano.learn import checkpoint, dataset
from livepiano.learn.network import ModelConfig, PerformanceRNN
from livepiano.learn.plan import DECAYS, PLANS, TrainConfig, lr_at

# --- the machine ----------------------------------------------------------------------------


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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX.
    Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported()
                                     or torch.cpu._is_amx_tile_supported())


def _bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to train under bf16 autocast, as ``--precision`` asks."""
    if cfg.precision == "fp32":
        return False
    native = native_bf16(device)
    if cfg.precision == "bf16" and not native:
        raise LivepianoError("--precision bf16 needs CUDA or a CPU with native bf16 (AVX-512 "
                             "BF16 or AMX), and this one has neither; use --precision auto.")
    return native


def _threads(cfg: TrainConfig, world: int) -> int:
    """Torch CPU threads for this process: as asked, or the cores shared out."""
    if cfg.threads:
        return cfg.threads
    return max(1, (os.cpu_count() or 1) // world)


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
    if cfg.widen is not None and not cfg.init_from:
        raise LivepianoError("--widen grows the network of --init-from; give --init-from too "
                             "(a new network takes --hidden).")
    if cfg.threads is not None and cfg.threads < 1:
        raise LivepianoError("--threads is a number of CPU threads; give 1 or more.")
    if cfg.loader_workers is not None and cfg.loader_workers < 0:
        raise LivepianoError("--loader-workers is a number of processes; give 0 or more.")
    if not 0.0 <= cfg.warmup < 1.0:
        raise LivepianoError("--warmup is a share of the plan; give a number from 0 to below 1.")
    if not (0.0 <= cfg.solo_share and 0.0 <= cfg.duet_share
            and cfg.solo_share + cfg.duet_share <= 1.0):
        raise LivepianoError("--solo-share and --duet-share are shares of the windows; give "
                             "two numbers from 0 to 1 that add up to 1 at most.")


# --- validation -----------------------------------------------------------------------------


def validation_segments(cache: dataset.TokenCache, count: int) -> list[np.ndarray]:
    """Up to ``count`` 30-second segments spread evenly over the validation split."""
    pieces = [s for f in cache.file_tokens("validation") for s in dataset.segments(f)]
    if not pieces:
        return []
    idx = np.linspace(0, len(pieces) - 1, num=min(count, len(pieces))).round().astype(int)
    return [pieces[i] for i in sorted(set(idx.tolist()))]


def beside_flags(segments: list[np.ndarray]) -> list[np.ndarray]:
    """Player flags that make each validation segment an accompaniment: the hands split, the
    model's hand alternating from one segment to the next."""
    return [players.hand_flags(s, own_hand=i % 2) for i, s in enumerate(segments)]


@torch.no_grad()
def nll_sum(model: PerformanceRNN, segments: list[np.ndarray], device, batch: int = 32,
            flags: list[np.ndarray] | None = None) -> tuple[float, int]:
    """(summed NLL in nats, events scored) over ``segments``, each from a zero state and an
    all-zero control, scoring tokens[1:] given tokens[:-1]. With ``flags`` (player flags per
    segment, for a model that knows who played) only the model's own events are scored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
    for start in range(0, len(order), batch):
        group = order[start:start + batch]
        longest = max(len(segments[i]) for i in group)
        x = torch.zeros(len(group), longest, dtype=torch.long)
        who = torch.zeros(len(group), longest, dtype=torch.long)
        mask = torch.zeros(len(group), longest - 1, dtype=torch.bool)
        for row, i in enumerate(group):
            s = segments[i]
            x[row, :len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
            mask[row, :len(s) - 1] = True
            if flags is not None:
                who[row, :len(s)] = torch.from_numpy(np.asarray(flags[i], dtype=np.int64))
                mask[row, :len(s) - 1] &= who[row, 1:len(s)] == players.OWN
        x, mask, who = x.to(device), mask.to(device), who.to(device)
        h, c = model.zero_state(len(group), device)
        logits, _, _ = model(x[:, :-1], h, c, None, who[:, :-1])
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              reduction="none").view_as(mask)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    model.train(was_training)
    return total, count


# --- the lanes of a batch -------------------------------------------------------------------


class _Lane:
    """One lane of the batch: its random generator, its window (tokens, player flags, control
    vector), where it is in it."""

    __slots__ = ("control", "flags", "pending", "position", "rng", "window")

    def __init__(self, seed: int, index: int):
        self.rng = np.random.default_rng([seed, index])
        self.window = None
        self.flags = None
        self.position = 0
        self.control = None
        self.pending = None  # the next window, being drawn ahead

    def used_up(self) -> bool:
        return self.window is None or self.position >= len(self.window) - 1

    def take(self, drawn: tuple[dataset.Window, dict]) -> None:
        window, after = drawn
        self.window, self.flags, self.control = window.tokens, window.flags, window.control
        self.position = 0
        self.rng.bit_generator.state = after

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "window": self.window, "flags": self.flags,
                "position": self.position, "control": self.control}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.window, self.position = state["window"], state["position"]
        self.flags = state.get("flags")
        self.control = state["control"]


@dataclass
class Batch:
    """The next ``bptt`` tokens of every lane of this process: inputs, targets, which targets
    are scored (1.0) and the inputs' player flags; ``lengths``: each lane's chunk; ``tokens``
    and ``scored_tokens``: the targets in the whole batch, over every process, and how many
    of them are scored (fewer when the other player's are only heard)."""

    x: np.ndarray
    y: np.ndarray
    scored: np.ndarray
    who: np.ndarray
    lengths: list[int]
    tokens: int = 0
    scored_tokens: int = 0


# --- a run ----------------------------------------------------------------------------------


class Run:
    """One training run as ``cfg`` says: new, from another checkpoint's weights, or resumed
    from ``cfg.out``. Holds the network, the optimizer, the lanes and the bookkeeping; its
    methods are the steps of the loop in ``_train``."""

    def __init__(self, cfg: TrainConfig, resume: bool, log, rank: int, world: int, device):
        self.cfg, self.log, self.rank, self.world, self.device = cfg, log, rank, world, device
        torch.manual_seed(cfg.seed + rank)
        self.bf16 = _bf16(cfg, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._data()
        state = self._resumable() if resume and Path(cfg.out).exists() else None
        self._network(state)
        self._lanes_and_bookkeeping(state)
        self._report_start()

    # set-up

    def _data(self) -> None:
        cfg = self.cfg
        self.cache = dataset.TokenCache(cfg.cache)
        self.files = self.cache.files("train")
        self.train_tokens = len(self.cache.tokens("train"))
        if not self.train_tokens:
            raise LivepianoError(f"the cache {cfg.cache} has no training tokens; prepare a "
                                 f"folder with MIDI files.")
        self.val = validation_segments(self.cache, cfg.eval_segments)
        self.my_val = self.val[self.rank::self.world]

    def _resumable(self) -> dict:
        out = self.cfg.out
        state = checkpoint.read(out, "to resume from")
        if "world_size" not in state:
            raise LivepianoError(f"{out} was written by an earlier livepiano whose runs cannot be "
                                 f"resumed; start a new run from its weights with "
                                 f"`--init-from {out} -o NEW.pt`.")
        if "resume" not in state:
            raise LivepianoError(f"{out} holds weights only, not a run to resume; start a new "
                                 f"run from it with `--init-from {out} -o NEW.pt`.")
        self.log(f"resuming {out} at step {state['step']} ({state['tokens_seen']:,} tokens, "
                 f"written by {state['world_size']} process(es))")
        return state

    def _network(self, state: dict | None) -> None:
        cfg = self.cfg
        self.init = None
        if state is not None:
            model = PerformanceRNN(ModelConfig(**state["config"]))
            model.load_state_dict(state["model"])
        elif cfg.init_from:
            self.init = checkpoint.read(cfg.init_from, "to start from")
            model = checkpoint.network(self.init, cfg.init_from, widen=cfg.widen,
                                       players=cfg.two_players, dropout=cfg.dropout)
        else:
            model = PerformanceRNN(ModelConfig(
                embedding=cfg.embedding, hidden=cfg.hidden, layers=cfg.layers,
                dropout=cfg.dropout, control_dim=codec.CONTROL_DIM if cfg.conditioned else 0,
                players=2 if cfg.two_players else 0))
        self.model = model.to(self.device)
        self.mcfg = model.config
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            for group, wd in zip(self.opt.param_groups, (cfg.weight_decay, 0.0)):
                group["weight_decay"] = wd
        # Under autocast cuDNN runs the LSTM in float16 whatever the autocast type (the rest
        # is bf16), so gradients are scaled against underflow there; on a CPU bf16 has
        # float32's range and needs no scaling.
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.bf16 and self.device.type == "cuda")
        if state and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.net = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _lanes_and_bookkeeping(self, state: dict | None) -> None:
        cfg, rank, world = self.cfg, self.rank, self.world
        per_rank = cfg.batch // world
        self.mine = range(rank * per_rank, (rank + 1) * per_rank)
        self.lanes = [_Lane(cfg.seed, i) for i in self.mine]
        self.step, self.history, self.seconds_before = 0, [], 0.0
        # Tokens seen count the weights' whole life; the schedule counts from where this
        # plan began.
        init = self.init
        self.start_tokens = int(init.get("tokens_seen", init.get("tokens", 0))) if init else 0
        self.tokens = self.start_tokens
        self.init_meta = ({"path": str(cfg.init_from), "tokens_seen": self.start_tokens}
                          if init else None)
        self.h, self.c = self.model.zero_state(per_rank, self.device)
        if state is not None:
            self.step, self.tokens = state["step"], state["tokens_seen"]
            self.history = state["meta"]["history"]
            self.start_tokens = state["meta"]["schedule"]["start_tokens"]
            self.init_meta = state["meta"].get("init_from")
            r = state["resume"]
            self.seconds_before = r["seconds"]
            if len(r["lanes"]) != cfg.batch:
                raise LivepianoError(f"{cfg.out} was trained with --batch {len(r['lanes'])}; "
                                     f"resume it with the same --batch.")
            for lane, i in zip(self.lanes, self.mine):
                lane.set_state(r["lanes"][i])
            self.h = r["h"][:, self.mine.start:self.mine.stop].to(self.device)
            self.c = r["c"][:, self.mine.start:self.mine.stop].to(self.device)
            # Dropout masks come from each process's own generator: carried over when the
            # number of processes is the same, drawn afresh (seeded by the step) when not.
            if r["world_size"] == world:
                torch.set_rng_state(r["torch_rng"][rank])
                if (self.device.type == "cuda" and r.get("cuda_rng")
                        and r["cuda_rng"][rank] is not None):
                    torch.cuda.set_rng_state(r["cuda_rng"][rank])
            else:
                torch.manual_seed(cfg.seed + 7919 * self.step + rank)
        self.plan_tokens = cfg.epochs * self.train_tokens
        self.plan_seconds = (cfg.minutes or 0) * 60
        workers = cfg.loader_workers
        if workers is None:
            workers = (0 if self.device.type != "cuda" else
                       max(1, min(8, (os.cpu_count() or 2) // world - 1)))
        mix = (dataset.PlayerMix(solo=cfg.solo_share, duet=cfg.duet_share)
               if self.mcfg.players else None)
        self.windows = dataset.LaneWindows(
            cfg.cache, steps=round(cfg.window_seconds * codec.STEPS_PER_SECOND),
            stretch=cfg.stretch, transpose=cfg.transpose, max_tokens=cfg.window_tokens,
            seed=cfg.seed, conditioned=bool(self.mcfg.control_dim),
            control_dropout=cfg.control_dropout, mix=mix, workers=workers)
        self.x = np.zeros((per_rank, cfg.bptt), np.int64)
        self.y = np.zeros((per_rank, cfg.bptt), np.int64)
        self.scored = np.zeros((per_rank, cfg.bptt), np.float32)
        self.who = np.zeros((per_rank, cfg.bptt), np.int64)
        self.t_start = time.monotonic()

    def _report_start(self) -> None:
        m, cfg = self.mcfg, self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model {m.layers}x{m.hidden} ({n_params / 1e6:.2f}M parameters, "
                 f"{'conditioned' if m.control_dim else 'unconditioned'}"
                 f"{', two players' if m.players else ''}) on {self.world} x "
                 f"{self.device.type} ({torch.get_num_threads()} thread(s)), "
                 f"{'bf16 autocast' if self.bf16 else 'float32'}; "
                 f"train {self.train_tokens:,} tokens in {len(self.files)} files; "
                 f"{len(self.val)} validation segments"
                 + (f"; weights from {cfg.init_from} ({self.start_tokens:,} tokens)"
                    if self.init else ""))

    # the loop's steps

    def elapsed(self) -> float:
        """Seconds of this process's part of the run."""
        return time.monotonic() - self.t_start

    def spent(self) -> float:
        """Seconds of the whole run, earlier parts included."""
        return self.seconds_before + self.elapsed()

    def next_batch(self) -> Batch:
        """The next chunk of every lane; lanes whose window is used up start a new one, with
        a fresh LSTM state."""
        fresh = [i for i, lane in enumerate(self.lanes) if lane.used_up()]
        for i in fresh:  # all asked for before any is waited on
            if self.lanes[i].pending is None:
                self.lanes[i].pending = self.windows.ahead(self.lanes[i].rng.bit_generator.state)
        for i in fresh:
            lane = self.lanes[i]
            lane.take(lane.pending.result())
            lane.pending = self.windows.ahead(lane.rng.bit_generator.state)
        if fresh:
            self.h, self.c = self.h.clone(), self.c.clone()
            self.h[:, fresh] = 0.0
            self.c[:, fresh] = 0.0
        x, y, scored, who = self.x, self.y, self.scored, self.who
        for a in (x, y, scored, who):
            a.fill(0)
        lengths = []
        for i, lane in enumerate(self.lanes):
            at = lane.position
            chunk = lane.window[at:at + self.cfg.bptt + 1]
            n = len(chunk) - 1
            lengths.append(n)
            x[i, :n], y[i, :n], scored[i, :n] = chunk[:-1], chunk[1:], 1.0
            if lane.flags is not None:
                flags = lane.flags[at:at + n + 1]
                who[i, :n] = flags[:-1]
                scored[i, :n] *= flags[1:] == players.OWN  # the other player is heard only
        return Batch(x, y, scored, who, lengths)

    def agree(self, batch: Batch, stop_asked: bool) -> tuple[bool, float]:
        """Every process must agree on the batch's size, whether to stop and where the
        schedule is (it may follow rank 0's clock), so they travel in one reduction:
        (any process asked to stop, rank 0's elapsed seconds); sets the batch's counts."""
        shared = torch.tensor([float(sum(batch.lengths)), float(batch.scored.sum()),
                               1.0 if stop_asked else 0.0,
                               self.elapsed() if self.rank == 0 else 0.0], dtype=torch.float64)
        if self.world > 1:
            shared = shared.to(self.device)
            dist.all_reduce(shared)
            shared = shared.cpu()
        batch.tokens, batch.scored_tokens = int(shared[0]), int(shared[1])
        return float(shared[2]) > 0, float(shared[3])

    def done(self, elapsed: float) -> str | None:
        """Why the plan is over at ``elapsed`` seconds of this part, or None."""
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "max steps"
        # A schedule over minutes counts the minutes of earlier runs of the plan.
        if cfg.minutes is not None and elapsed + (
                self.seconds_before if cfg.plan == "minutes" else 0.0) >= cfg.minutes * 60:
            return "time budget"
        if cfg.plan == "epochs" and self.tokens - self.start_tokens >= self.plan_tokens:
            return f"{cfg.epochs:g} epoch(s) done"
        return None

    def learning_rate(self, elapsed: float) -> float:
        """The planned rate at this point of the plan, set on the optimizer."""
        progress = ((self.tokens - self.start_tokens) / self.plan_tokens
                    if self.cfg.plan == "epochs"
                    else (self.seconds_before + elapsed) / self.plan_seconds)
        lr = lr_at(self.cfg, progress)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, batch: Batch) -> float:
        """One optimizer step on ``batch``; returns its mean loss over the scored targets."""
        cfg, device = self.cfg, self.device
        for lane, n in zip(self.lanes, batch.lengths):
            lane.position += n
        xt, yt, st, wt = (torch.from_numpy(a).to(device, non_blocking=True)
                          for a in (batch.x, batch.y, batch.scored, batch.who))
        control = None
        if self.mcfg.control_dim:
            ctrl = torch.from_numpy(np.stack([lane.control for lane in self.lanes])).to(device)
            control = ctrl[:, None, :].expand(-1, cfg.bptt, -1)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16
                    else nullcontext())
        with autocast:
            logits, h, c = self.net(xt, self.h, self.c, control,
                                    wt if self.mcfg.players else None)
        self.h, self.c = h.detach(), c.detach()
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yt.reshape(-1),
                              reduction="none")
        weights = st.reshape(-1)
        # DDP averages gradients over processes: scale so the step is that of the whole
        # batch's mean loss.
        loss = (nll * weights).sum() * self.world / max(batch.scored_tokens, 1)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        self.tokens += batch.tokens
        return float((nll.detach() * weights).sum() / weights.sum().clamp(min=1))

    def evaluate(self) -> dict:
        """Validation NLL over the segments (every process scores its share): alone, and for
        a model that knows who played, of its own events beside the other hand."""
        figures = {"val_nll": self._score(None)}
        if self.mcfg.players:
            figures["val_nll_beside"] = self._score(beside_flags(self.my_val))
        self.history.append({"step": self.step, "tokens": self.tokens,
                             **{k: round(v, 4) for k, v in figures.items()},
                             "seconds": round(self.spent(), 1)})
        return figures

    def _score(self, flags) -> float:
        total, count = (nll_sum(self.model, self.my_val, self.device, flags=flags)
                        if self.my_val else (0.0, 0))
        if self.world > 1:
            both = torch.tensor([total, float(count)], dtype=torch.float64, device=self.device)
            dist.all_reduce(both)
            total, count = float(both[0]), int(both[1])
        return total / count if count else float("nan")

    def save(self, val_nll: float | None = None) -> None:
        """Write the checkpoint (rank 0, with every process's lanes in it)."""
        cfg = self.cfg
        mine = {"lanes": [lane.state() for lane in self.lanes],
                "h": self.h.detach().float().cpu(), "c": self.c.detach().float().cpu(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}
        parts = self._gathered(mine)
        if self.rank != 0:
            return
        payload = {
            "config": self.mcfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": self.step, "tokens_seen": self.tokens, "world_size": self.world,
            "epochs": self.tokens / self.train_tokens,
            "meta": {"data": {"cache": str(cfg.cache), "source": self.cache.index.get("source"),
                              "train_files": len(self.files), "train_tokens": self.train_tokens},
                     "val_nll": val_nll if val_nll is not None else
                     (self.history[-1]["val_nll"] if self.history else None),
                     "history": self.history,
                     "schedule": {"start_tokens": self.start_tokens, "plan": cfg.plan,
                                  "plan_tokens": self.plan_tokens if cfg.plan == "epochs" else None,
                                  "plan_seconds": (self.plan_seconds if cfg.plan == "minutes"
                                                   else None),
                                  "lr": cfg.lr, "min_lr_ratio": cfg.min_lr_ratio,
                                  "warmup": cfg.warmup, "decay": cfg.decay},
                     "init_from": self.init_meta,
                     "augment": {"stretch": list(cfg.stretch), "transpose": cfg.transpose},
                     "control_dropout": cfg.control_dropout,
                     "precision": "bf16 autocast" if self.bf16 else "float32",
                     **({"players": {"solo": cfg.solo_share, "duet": cfg.duet_share,
                                     "hands": round(1 - cfg.solo_share - cfg.duet_share, 4)}}
                        if self.mcfg.players else {}),
                     "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in asdict(cfg).items()}},
            "resume": {"world_size": self.world, "seconds": self.spent(),
                       "lanes": [lane for part in parts for lane in part["lanes"]],
                       "h": torch.cat([part["h"] for part in parts], dim=1),
                       "c": torch.cat([part["c"] for part in parts], dim=1),
                       "torch_rng": [part["torch_rng"] for part in parts],
                       "cuda_rng": [part["cuda_rng"] for part in parts]},
        }
        checkpoint.write(cfg.out, payload)

    def _gathered(self, obj) -> list:
        if self.world == 1:
            return [obj]
        bucket = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, bucket, dst=0)
        return bucket

    def close(self) -> None:
        self.windows.close()


# --- the loop -------------------------------------------------------------------------------


class _Progress:
    """The progress bar (rank 0): smoothed loss, tokens per second, epochs, rate."""

    def __init__(self, run: Run):
        from tqdm import tqdm

        self.run = run
        self.bar = tqdm(desc="train", unit="step", initial=run.step) if run.rank == 0 else None
        self.smooth = None
        self.t0, self.tokens0 = time.monotonic(), run.tokens
        self.rate_t, self.rate_tokens, self.rate = self.t0, run.tokens, 0.0

    def update(self, loss: float, lr: float) -> None:
        if self.bar is None:
            return
        run = self.run
        self.smooth = loss if self.smooth is None else 0.98 * self.smooth + 0.02 * loss
        now = time.monotonic()
        if now - self.rate_t >= 5:
            self.rate = (run.tokens - self.rate_tokens) / (now - self.rate_t)
            self.rate_t, self.rate_tokens = now, run.tokens
        self.bar.set_postfix_str(f"loss {self.smooth:.3f} | {self.rate:,.0f} tok/s | "
                                 f"{run.tokens / run.train_tokens:.3f} epochs | lr {lr:.2e}",
                                 refresh=False)
        self.bar.update(run.step - self.bar.n)

    def mean_rate(self) -> float:
        """Tokens per second over this part of the run, validation and checkpoints included."""
        return (self.run.tokens - self.tokens0) / max(time.monotonic() - self.t0, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _describe(figures: dict) -> str:
    text = f"validation NLL {figures['val_nll']:.4f} nats/event"
    if "val_nll_beside" in figures:
        text += f" (own events beside the other hand: {figures['val_nll_beside']:.4f})"
    return text


def _train(cfg: TrainConfig, resume: bool, log, rank: int, world: int, device) -> dict:
    run = Run(cfg, resume, log, rank, world, device)
    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = "interrupted"

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = _Progress(run)
    last_eval = last_ckpt = 0.0
    run.model.train()
    try:
        while True:
            batch = run.next_batch()
            asked, elapsed = run.agree(batch, stop["why"] is not None)
            stop["why"] = (stop["why"] or "interrupted") if asked else run.done(elapsed)
            if stop["why"]:
                break
            lr = run.learning_rate(elapsed)
            loss = run.train_step(batch)
            progress.update(loss, lr)
            if elapsed - last_eval >= cfg.eval_every_minutes * 60:
                log(f"\nstep {run.step}: {_describe(run.evaluate())} ({run.tokens:,} tokens)")
                last_eval = elapsed
            if elapsed - last_ckpt >= cfg.checkpoint_every_minutes * 60:
                run.save()
                last_ckpt = elapsed
    finally:
        run.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    progress.close()
    rate = progress.mean_rate()
    figures = run.evaluate()
    run.save(figures["val_nll"])
    log(f"stopped ({stop['why']}) at step {run.step}: {run.tokens:,} tokens "
        f"({run.tokens / run.train_tokens:.3f} epochs, {rate:,.0f} tokens/s in this part), "
        f"{_describe(figures)}; saved {cfg.out}")
    return {"step": run.step, "tokens": run.tokens, "val_nll": figures["val_nll"],
            "history": run.history, "model": run.model, "tokens_per_second": rate}


def train(cfg: TrainConfig, resume: bool = True, log=print) -> dict:
    """Train as ``cfg`` says, resuming from ``cfg.out`` when it exists and ``resume`` holds.
    Under torchrun (WORLD_SIZE > 1) this joins the process group, or uses the one already
    there. Returns step, tokens, val_nll, history, tokens_per_second and the trained model."""
    rank, world, local_rank = _world()
    owns_group = world > 1 and not dist.is_initialized()
    _check(cfg, world)
    torch.set_num_threads(_threads(cfg, world))
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
