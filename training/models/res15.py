"""res15 (Tang & Lin, "Deep Residual Learning for Small-Footprint Keyword Spotting", 2018), as an encoder.

The paper's encoder: a 3x3 convolution to 45 channels, then 13 dilated 3x3 convolutions (dilation
2^(i // 3)) with a residual connection every two layers and batch norm (no affine) after each, global average
pooling over time and frequency, and a linear embedding layer in place of the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Res15", "Res15Config"]


@dataclass(frozen=True)
class Res15Config:
    n_mfcc: int = 40
    channels: int = 45
    dilated_layers: int = 13
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        for name in ("n_mfcc", "channels", "dilated_layers", "embedding_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Res15Config.{name} must be positive, got {getattr(self, name)}")


class Res15(nn.Module):
    """Input: normalised MFCC [B, frames, n_mfcc]; output: embedding [B, D] before L2 normalisation."""

    def __init__(self, config: Res15Config = Res15Config()) -> None:
        super().__init__()
        self.config = config
        width = config.channels
        self.stem = nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for index in range(config.dilated_layers):
            dilation = 2 ** (index // 3)
            self.convs.append(
                nn.Conv2d(width, width, kernel_size=3, padding=dilation, dilation=dilation, bias=False)
            )
            self.norms.append(nn.BatchNorm2d(width, affine=False))
        self.embedding = nn.Linear(width, config.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(features.unsqueeze(1)))
        residual = x
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = torch.relu(conv(x))
            # Layers are numbered from 1 after the stem; every even layer closes a residual block.
            if (index + 1) % 2 == 0:
                x = y + residual
                residual = x
            else:
                x = y
            x = norm(x)
        embedding: torch.Tensor = self.embedding(x.mean(dim=(2, 3)))
        return embedding
