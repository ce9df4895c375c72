"""Which dtype the training forward pass runs in: bfloat16 autocast where the hardware does it.

bf16 halves the bytes every activation moves and doubles what a vector unit computes per cycle,
but only on hardware that does bf16 natively (a recent GPU, or a CPU with AVX512-BF16 or AMX:
1.9x the images per second of float32 on this project's CPU);
emulated, it is slower than float32. So "auto" asks the hardware, and weights, optimiser,
likelihood and validation stay float32 whatever is chosen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .config import PRECISIONS, ConfigError


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware, read from Linux's CPU flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_native_bf16(device: torch.device) -> bool:
    """Ampere (compute capability 8) and later; torch's own check also counts emulation."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype of the forward pass for ``--precision name`` on ``device``."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r} (choose {', '.join(PRECISIONS)})")
    if name == "auto":
        native = gpu_has_native_bf16(device) if device.type == "cuda" else cpu_has_native_bf16()
        name = "bf16" if native else "fp32"
    elif name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "--precision bf16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is "
            "emulated, several times slower than fp32; --precision auto picks fp32 here",
            stacklevel=2,
        )
    return torch.bfloat16 if name == "bf16" else torch.float32
