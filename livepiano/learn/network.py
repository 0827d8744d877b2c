"""Performance RNN: an LSTM language model over the 388 performance events.

    token [B, T] ─▶ embedding ─┐
    control [B, T, C] ─────────┴▶ concat ─▶ LSTM × layers ─▶ linear ─▶ logits [B, T, 388]

The control vector is optional (Magenta's "optional multiconditioned" Performance RNN):
note density and a 12-bin pitch-class histogram of the music around the step. Training
zeroes it part of the time, so an all-zero control means "unconditioned" and the same
weights serve both ways.
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

    def to_dict(self) -> dict:
        return asdict(self)


class PerformanceRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        self.lstm = nn.LSTM(config.embedding + config.control_dim, config.hidden,
                            num_layers=config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def zero_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config.layers, batch, self.config.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                control: torch.Tensor | None = None):
        x = self.embed(token)
        if self.config.control_dim:
            if control is None:
                control = x.new_zeros(*token.shape, self.config.control_dim)
            x = torch.cat([x, control], dim=-1)
        y, (h, c) = self.lstm(self.drop(x), (h, c))
        return self.head(self.drop(y)), h, c
