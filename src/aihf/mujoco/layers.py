"""Linear layers for SAC's small MLPs, with a choice of CPU matmul kernel.

On CPUs, PyTorch's fp32 `addmm` goes to MKL, which on AMD CPUs runs its AVX2 code path: on the 2-core AMD EPYC
(Zen 5) we develop on, a 256×256 layer with batch 256 ran at about 105 GFLOP/s through MKL and 215 GFLOP/s
through oneDNN, in full fp32 (bench/sac_throughput.py). `matmul="onednn"` runs forward and backward of these
layers through oneDNN's fp32 linear (`torch.ops.mkldnn._linear_pointwise`, the kernel `torch.compile` uses for
CPU linear layers); `"aten"` is plain `F.linear`/`baddbmm`; `"auto"` picks oneDNN for CPU tensors when the op
exists. Both compute the same function; results differ only by fp32 summation order.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from aihf.errors import ConfigError

MATMUL_BACKENDS = ("auto", "aten", "onednn")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN (weight is (out, in), as in nn.Linear; strided views are accepted)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _mm(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        grad_w = _mm(grad.t(), x.t(), None) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def use_onednn(backend: str, x: torch.Tensor) -> bool:
    if backend == "aten" or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    return backend == "onednn" or onednn_available()


def check_backend(backend: str) -> str:
    if backend not in MATMUL_BACKENDS:
        raise ConfigError(f"policy.matmul={backend!r}: expected one of {MATMUL_BACKENDS}")
    if backend == "onednn" and not onednn_available():
        raise ConfigError("policy.matmul=onednn: this PyTorch build has no oneDNN linear op; use auto or aten")
    return backend


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) whose CPU matmuls can run through oneDNN."""

    def __init__(self, in_features: int, out_features: int, backend: str = "auto"):
        super().__init__(in_features, out_features)
        self.backend = check_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and use_onednn(self.backend, x) and not torch.compiler.is_compiling():
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class EnsembleLinear(nn.Module):
    """E independent linear layers (the twin critics) in one module; weight (E, out, in) as E nn.Linear weights."""

    def __init__(self, ensemble: int, in_features: int, out_features: int, backend: str = "auto"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(ensemble, out_features))
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)  # same scale as nn.Linear's default
        nn.init.uniform_(self.bias, -bound, bound)
        self.backend = check_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in), shared by all members, or (E, B, in); returns (E, B, out)."""
        shared = x.dim() == 2
        if use_onednn(self.backend, x) and not torch.compiler.is_compiling():
            return torch.stack([_OneDNNLinear.apply(x if shared else x[e], self.weight[e], self.bias[e])
                                for e in range(self.weight.shape[0])])
        if shared:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
