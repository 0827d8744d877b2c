"""Training checkpoints on disk: written whole or not at all, read back with one-line errors,
turned into the network they describe. The one reader for training (resume, ``--init-from``)
and export."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from livepiano import LivepianoError

WRAPPERS = ("_orig_mod.", "module.")  # torch.compile's and DistributedDataParallel's prefixes


def write(path: str | os.PathLike, payload: dict) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint behind


def read(path: str | os.PathLike, what: str = "") -> dict:
    """The checkpoint dict at ``path`` (its ``config`` and ``model`` entries are there);
    ``what`` finishes the sentence of an error ("to resume from")."""
    import torch

    path = Path(path)
    purpose = f" {what}" if what else ""
    if not path.is_file():
        raise LivepianoError(f"no checkpoint at {path}; give the .pt file that `livepiano "
                             f"train` wrote{purpose}.")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Resume state may hold objects the safe loader refuses; this is our own file.
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise LivepianoError(f"{path} is not a readable torch checkpoint ({type(e).__name__}); "
                             f"give a .pt file written by `livepiano train`{purpose}.") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise LivepianoError(f"{path} is not a livepiano checkpoint (no config/model entries); "
                             f"give a .pt file written by `livepiano train`{purpose}.")
    return state


def weights(state: dict) -> dict:
    """The checkpoint's weights under the network's own names."""
    out = {}
    for k, v in state["model"].items():
        for prefix in WRAPPERS:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def network(state: dict, path: str | os.PathLike = "the checkpoint", widen: int | None = None,
            players: bool = False, **config):
    """The ``PerformanceRNN`` a checkpoint describes, its weights loaded; ``config`` overrides
    entries of its config that do not change the weights' shapes (dropout); ``widen`` grows its
    hidden layers to that many units, computing the same function (``network.widened``);
    ``players`` gives a one-player network the player input (``network.with_players``)."""
    from livepiano.learn.network import ModelConfig, PerformanceRNN, widened, with_players

    known = set(ModelConfig.__dataclass_fields__)
    cfg = ModelConfig(**{**{k: v for k, v in dict(state["config"]).items() if k in known},
                         **config})
    loaded = weights(state)
    if widen is not None and widen != cfg.hidden:
        if widen < cfg.hidden:
            raise LivepianoError(f"--widen {widen} is narrower than the {cfg.hidden} units of "
                                 f"{path}; a network can only be widened.")
        try:
            loaded = widened(loaded, cfg, widen)
        except (KeyError, RuntimeError) as e:
            raise LivepianoError(f"{path}: the weights do not fit the model its config "
                                 f"describes ({e}); the checkpoint is damaged.") from None
        cfg = ModelConfig(**{**cfg.to_dict(), "hidden": widen})
    if players and not cfg.players:
        loaded = with_players(loaded, cfg)
        cfg = ModelConfig(**{**cfg.to_dict(), "players": 2})
    model = PerformanceRNN(cfg)
    try:
        model.load_state_dict(loaded)
    except RuntimeError as e:
        raise LivepianoError(f"{path}: the weights do not fit the model its config describes "
                             f"({str(e).splitlines()[0]}); the checkpoint is damaged.") from None
    return model
