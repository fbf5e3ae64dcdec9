"""Parameter and multiply-accumulate counts of a model, by forward hooks on its Conv and Linear layers.

MACs count the multiplications of convolutions and linear layers only (batch norm folds into the preceding
convolution at export; activations, adds and pooling are negligible). They are per single input (batch 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["count_params_and_macs"]


def _conv_macs(module: nn.Conv1d | nn.Conv2d, output: torch.Tensor) -> int:
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return per_output * output[0].numel()


def count_params_and_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(trainable parameters, MACs for one input of `input_shape` without the batch axis)."""
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            total += _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features * (output[0].numel() // module.out_features)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return params, total
