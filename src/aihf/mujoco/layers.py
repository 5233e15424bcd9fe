"""Linear layers and MLPs for SAC's networks, with a choice of CPU matmul kernel.

On CPUs, PyTorch's fp32 `addmm` goes to MKL, which on AMD CPUs runs its AVX2 code path: on the 2-core AMD EPYC
(Zen 5) we develop on, a 256×256 layer with batch 256 ran at about 105 GFLOP/s through MKL and 215–230 GFLOP/s
through oneDNN, in full fp32 (docs/engine.md). `matmul="onednn"` runs forward and backward of the wide layers
through oneDNN's fp32 linear (`torch.ops.mkldnn._linear_pointwise`, the kernel `torch.compile` uses for CPU
linear layers), with the following ReLU fused into the same call; `"aten"` is plain `F.linear`/`baddbmm`;
`"auto"` is oneDNN for CPU fp32 tensors when the op exists. Both compute the same function; results differ only by
fp32 summation order. Narrow layers (output heads) and small batches (acting) stay on aten, where oneDNN's fixed
cost per call (about 10 µs) exceeds the work.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from aihf.errors import ConfigError

MATMUL_BACKENDS = ("auto", "aten", "onednn")
MIN_ROWS, MIN_FEATURES = 64, 64  # below these, aten's kernels are faster than oneDNN's per-call cost


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def check_backend(backend: str) -> str:
    if backend not in MATMUL_BACKENDS:
        raise ConfigError(f"policy.matmul={backend!r}: expected one of {MATMUL_BACKENDS}")
    if backend == "onednn" and not onednn_available():
        raise ConfigError("policy.matmul=onednn: this PyTorch build has no oneDNN linear op; use auto or aten")
    return backend


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = False) -> torch.Tensor:
    """relu?(x @ weight.T + bias) in one oneDNN call (weight (out, in) as in nn.Linear; strided views accepted)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = relu?(x Wᵀ + b); backward: ∂x = g W, ∂W = gᵀ x, ∂b = Σ g, with g masked by y > 0 after a ReLU."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu: bool):
        y = _mm(x, weight, bias, relu)
        ctx.relu = relu
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        grad_x = _mm(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        grad_w = _mm(grad.t(), x.t(), None) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def _fast(backend: str, x: torch.Tensor, out_features: int) -> bool:
    if backend == "aten" or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2:
        return False
    if x.shape[0] < MIN_ROWS or out_features < MIN_FEATURES or torch.compiler.is_compiling():
        return False
    return backend == "onednn" or onednn_available()


def linear(x, weight, bias, backend: str, relu: bool = False) -> torch.Tensor:
    if _fast(backend, x, weight.shape[0]):
        return _OneDNNLinear.apply(x, weight, bias, relu)
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else y


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) whose CPU matmuls can run through oneDNN."""

    def __init__(self, in_features: int, out_features: int, backend: str = "auto"):
        super().__init__(in_features, out_features)
        self.backend = check_backend(backend)

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.backend, relu)


class MLP(nn.Sequential):
    """Linear and ReLU layers (nn.Sequential's state-dict keys); a Linear followed by a ReLU runs as one call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers, i = list(self), 0
        while i < len(layers):
            fuse = isinstance(layers[i], Linear) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            x = layers[i](x, relu=True) if fuse else layers[i](x)
            i += 2 if fuse else 1
        return x


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
        """x: (B, in), shared by all members, or (E, B, in); returns (E, B, out) with one batched matmul."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class EnsembleMLP(nn.Sequential):
    """EnsembleLinear and ReLU layers. On a GPU (or with matmul=aten) each layer is one batched matmul over the
    members; on a CPU with oneDNN each member runs as its own fused linear+ReLU chain."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        first = layers[0]
        if not _fast(first.backend, x, first.weight.shape[1]):
            return super().forward(x)
        members = [x] * first.weight.shape[0]
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.ReLU):  # not after an EnsembleLinear (those are fused below)
                members, i = [F.relu(h) for h in members], i + 1
                continue
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
            weights, biases = layer.weight.unbind(0), layer.bias.unbind(0)
            members = [linear(h, w, b, layer.backend, relu) for h, w, b in zip(members, weights, biases)]
            i += 2 if relu else 1
        return torch.stack(members)
