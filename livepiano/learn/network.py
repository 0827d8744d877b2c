"""Performance RNN: an LSTM language model over the 388 performance events.

    token [B, T] ─▶ embedding ─(+ player embedding)─┐
    control [B, T, C] ──────────────────────────────┴▶ concat ─▶ LSTM × layers ─▶ linear
                                                                       ─▶ logits [B, T, 388]

The control vector is optional (Magenta's "optional multiconditioned" Performance RNN):
note density and a 12-bin pitch-class histogram of the music around the step. Training
zeroes it part of the time, so an all-zero control means "unconditioned" and the same
weights serve both ways.

A model that knows who played (``players`` = 2) also takes a player flag beside every event
(``core.players``: 0 its own, 1 the other player's; time-shifts 0), whose embedding is added
to the event's. It is trained to predict its own events only: the other player's are heard,
never targets. ``with_players`` gives a one-player network that input, starting silent.

``widened`` grows a trained network's hidden size without changing what it computes, so a
larger network can continue from a smaller one's training instead of starting over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from livepiano.core import codec
from livepiano.core.codec import CONTROL_DIM


@dataclass
class ModelConfig:
    vocab_size: int = codec.VOCAB_SIZE
    embedding: int = 256
    hidden: int = 512
    layers: int = 3
    control_dim: int = CONTROL_DIM  # 0 for an unconditioned model
    dropout: float = 0.1
    players: int = 0  # 2 for a model that takes a player flag beside every event

    def to_dict(self) -> dict:
        return asdict(self)


class PerformanceRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        if config.players:
            self.player_embed = nn.Embedding(config.players, config.embedding)
            nn.init.zeros_(self.player_embed.weight)
        self.lstm = nn.LSTM(config.embedding + config.control_dim, config.hidden,
                            num_layers=config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def zero_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config.layers, batch, self.config.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                control: torch.Tensor | None = None, player: torch.Tensor | None = None):
        x = self.embed(token)
        if self.config.players:
            # No flags: every event is the model's own, as when it plays alone.
            if player is None:
                player = torch.zeros_like(token)
            x = x + self.player_embed(player)
        if self.config.control_dim:
            if control is None:
                control = x.new_zeros(*token.shape, self.config.control_dim)
            x = torch.cat([x, control], dim=-1)
        y, (h, c) = self.lstm(self.drop(x), (h, c))
        return self.head(self.drop(y)), h, c


def with_players(weights: dict, config: ModelConfig, players: int = 2) -> dict:
    """``weights`` of a one-player network with a player input added that starts at zero, so
    the network computes what it did for any flags until training teaches it the players."""
    out = dict(weights)
    out["player_embed.weight"] = torch.zeros(players, config.embedding,
                                             dtype=weights["embed.weight"].dtype)
    return out


def widened(weights: dict, config: ModelConfig, hidden: int) -> dict:
    """``weights`` of a network of ``config`` placed in one of ``hidden`` units per layer that
    computes the same function: each gate's old units keep their rows, the new units get the
    fresh initialisation of an ``nn.LSTM`` of the new size, and every weight that reads a new
    unit (the next layer's input, the recurrence, the output layer) starts at zero. The new
    units' own activity is nonzero, so their outgoing weights get gradients from the start."""
    old = config.hidden
    if hidden < old:
        raise ValueError(f"a network can be widened, not narrowed ({old} -> {hidden} units)")
    fresh = PerformanceRNN(ModelConfig(**{**config.to_dict(), "hidden": hidden})).state_dict()
    out = {}
    for name, target in fresh.items():
        source = weights[name]
        grown = target.clone()
        if name.startswith("lstm."):
            # Rows are four gate blocks (input, forget, cell, output) of `hidden` units each.
            rows = grown.view(4, hidden, *grown.shape[1:])
            src = source.view(4, old, *source.shape[1:])
            reads_hidden = name.startswith("lstm.weight_hh") or (
                name.startswith("lstm.weight_ih") and not name.endswith("_l0"))
            if reads_hidden:
                rows[:, :old, :old] = src
                rows[:, :old, old:] = 0.0
            elif grown.dim() == 2:
                rows[:, :old, :] = src
            else:
                rows[:, :old] = src
        elif name == "head.weight":
            grown[:, :old] = source
            grown[:, old:] = 0.0
        else:
            grown = source.clone()
        out[name] = grown
    return out
