"""The weight average every stage keeps and exports (``--no-ema`` exports the raw weights)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel


def exponential_average(module: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``module``'s weights and buffers whose decay ramps up as (1 + n) / (10 + n), so
    early averages are not stuck at the initial weights."""
    return AveragedModel(module, multi_avg_fn=_ema_update(decay), use_buffers=True)


def _ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """average + (current - average) * (1 - rate) over a device's tensors at once: the step
    count is read once per step, not once per tensor (on a GPU each read is a blocking copy),
    and the arithmetic is a few multi-tensor kernels instead of three per tensor."""

    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], n: Any) -> None:
        count = float(n)
        weight = 1.0 - min(decay, (1.0 + count) / (10.0 + count))
        if averages[0].is_floating_point():
            step = torch._foreach_sub(currents, averages)
            torch._foreach_mul_(step, weight)
            torch._foreach_add_(averages, step)
        else:  # integer buffers (a BatchNorm's count): the same rule, truncated back
            for average, current in zip(averages, currents):
                average.copy_(average + (current - average) * weight)

    return update
