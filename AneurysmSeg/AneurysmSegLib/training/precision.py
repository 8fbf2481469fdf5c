"""Mixed precision for training: float16 autocast with a gradient scaler on CUDA GPUs (classic AMP),
bfloat16 autocast on CPUs that compute it natively (AVX512-BF16/AMX: about 2x faster there), or none.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch


@dataclass(frozen=True)
class Precision:
    """Mixed precision of the forward pass: bfloat16 autocast (CPUs with AVX512-BF16/AMX, or GPUs), or
    float16 autocast with a gradient scaler (CUDA only), or none."""

    dtype: torch.dtype | None = None

    @classmethod
    def choose(cls, request: str, device: torch.device) -> "Precision":
        """``request`` off | bf16 | fp16 | auto (CUDA: fp16 + GradScaler; CPU: bf16 where supported)."""
        if request == "off":
            return cls(None)
        if request == "bf16":
            return cls(torch.bfloat16)
        if request == "fp16":
            if device.type != "cuda":
                raise ValueError("float16 mixed precision needs a CUDA device (use bf16 or off on a CPU)")
            return cls(torch.float16)
        if request != "auto":
            raise ValueError(f"unknown precision {request!r}: off, bf16, fp16 or auto")
        if device.type == "cuda":
            return cls(torch.float16)
        return cls(torch.bfloat16) if cpu_has_bf16() else cls(None)

    def autocast(self, device: torch.device) -> ContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> "torch.amp.GradScaler | None":
        """float16 gradients underflow without scaling; bfloat16 and float32 need none."""
        if self.dtype == torch.float16 and device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
