"""edge_tcn: the board's encoder, a 1-D temporal-convolution ResNet over MFCC frames.

MFCC coefficients are the channels and time the one spatial axis (as TC-ResNet), so every convolution sees
the whole spectrum. Blocks are depthwise-separable (depthwise k=9 over time, then pointwise), which keeps
parameters and multiply-accumulates within the board's budget (<= 250k parameters, <= 30M MACs per 1.5 s
window). Only Conv1d, BatchNorm (folded at export), ReLU, add, mean pooling and Linear: ops that quantize
cleanly through ONNX -> onnx2tf -> int8 TFLite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["EdgeTcn", "EdgeTcnConfig"]


@dataclass(frozen=True)
class EdgeTcnConfig:
    n_mfcc: int = 40
    stem_channels: int = 64
    # One (channels, stride) pair per residual block: 231k parameters, 11.2M MACs per 1.5 s window.
    blocks: tuple[tuple[int, int], ...] = ((64, 1), (96, 2), (96, 1), (128, 2), (128, 1), (160, 1))
    kernel_size: int = 9
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        # TOML and checkpoints hand lists; normalise to tuples so the config stays hashable and comparable.
        object.__setattr__(self, "blocks", tuple((int(c), int(s)) for c, s in self.blocks))
        if not self.blocks:
            raise ValueError("EdgeTcnConfig.blocks must hold at least one (channels, stride) pair")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"EdgeTcnConfig.kernel_size must be odd, got {self.kernel_size}")
        for channels, stride in self.blocks:
            if channels <= 0 or stride not in (1, 2):
                raise ValueError(f"EdgeTcnConfig.blocks: bad (channels, stride) = ({channels}, {stride})")


class _SeparableBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.depthwise1 = nn.Conv1d(
            in_channels, in_channels, kernel_size, stride=stride, padding=pad, groups=in_channels, bias=False
        )
        self.pointwise1 = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.norm1 = nn.BatchNorm1d(out_channels)
        self.depthwise2 = nn.Conv1d(
            out_channels, out_channels, kernel_size, padding=pad, groups=out_channels, bias=False
        )
        self.pointwise2 = nn.Conv1d(out_channels, out_channels, 1, bias=False)
        self.norm2 = nn.BatchNorm1d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm1d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.pointwise1(self.depthwise1(x))))
        y = self.norm2(self.pointwise2(self.depthwise2(y)))
        return torch.relu(y + self.shortcut(x))


class EdgeTcn(nn.Module):
    """Input: normalised MFCC [B, frames, n_mfcc]; output: embedding [B, D] before L2 normalisation."""

    def __init__(self, config: EdgeTcnConfig = EdgeTcnConfig()) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(
            nn.Conv1d(config.n_mfcc, config.stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(config.stem_channels),
            nn.ReLU(),
        )
        layers = []
        channels = config.stem_channels
        for out_channels, stride in config.blocks:
            layers.append(_SeparableBlock(channels, out_channels, stride, config.kernel_size))
            channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.embedding = nn.Linear(channels, config.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        """The last block's output [B, channels, frames / 4]: what a frame-sequence teacher's head reads."""
        frames: torch.Tensor = self.blocks(self.stem(features.transpose(1, 2)))
        return frames

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Mean over time, then the linear embedding layer."""
        embedding: torch.Tensor = self.embedding(frames.mean(dim=2))
        return embedding

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.frames(features))
