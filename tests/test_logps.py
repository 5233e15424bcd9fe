"""Response log-probs without a full-vocabulary fp32 tensor: equal to the naive log_softmax computation (values and
gradients). From a model's logits, no fp32 tensor of more than one chunk's positions × vocabulary is made in the
forward pass; with the LM head fused in, no (positions × vocabulary) tensor of any dtype in either direction."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from aihf.llm.sequences import _HeadLogProbs, _TargetLogProbs

B, T, V, H, CHUNK = 3, 9, 50, 16, 4


def _select(mask):
    """The (row, position) pairs that read a target, with one position reading two (a packed row's prompt end)."""
    rows, cols = mask[:, 1:].nonzero(as_tuple=True)
    return torch.cat([rows, rows[:1]]), torch.cat([cols, cols[:1]])


def _inputs(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(B, T, V, generator=gen)).to(dtype).requires_grad_(True)
    ids = torch.randint(V, (B, T), generator=gen)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 2:7], mask[1, 4:9], mask[2, 1:3] = True, True, True  # responses of different lengths and offsets
    rows, cols = _select(mask)
    targets = torch.randint(V, (len(rows),), generator=gen)
    return logits, rows, cols, targets


def naive(logits, rows, cols, targets):
    return F.log_softmax(logits[rows, cols].float(), dim=-1).gather(1, targets[:, None]).squeeze(1)


def from_logits(logits, rows, cols, targets, chunk=CHUNK):
    return _TargetLogProbs.apply(logits, rows * T + cols, targets, chunk)


@pytest.mark.parametrize("chunk", [1, CHUNK, 1000])
def test_from_logits_equals_the_full_softmax_computation(chunk):
    logits, rows, cols, targets = _inputs()
    weights = torch.randn(len(rows), generator=torch.Generator().manual_seed(1))
    ours = from_logits(logits, rows, cols, targets, chunk)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    ref = naive(logits, rows, cols, targets)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, atol=1e-5)  # the repeated position's gradient is the sum of both


def _head(dtype=torch.float32, bias=True):
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(B * T, H, generator=gen).to(dtype).requires_grad_(True)
    weight = torch.randn(V, H, generator=gen).requires_grad_(True)
    b = torch.randn(V, generator=gen).requires_grad_(True) if bias else None
    targets = torch.randint(V, (B * T,), generator=gen)
    return hidden, weight, b, targets


@pytest.mark.parametrize("chunk", [1, CHUNK, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_head_equals_the_full_softmax_computation(chunk, bias):
    hidden, weight, b, targets = _head(bias=bias)
    leaves = [x for x in (hidden, weight, b) if x is not None]
    weights = torch.randn(len(hidden), generator=torch.Generator().manual_seed(1))
    ours = _HeadLogProbs.apply(hidden, weight, b, targets, chunk)
    g_ours = torch.autograd.grad((ours * weights).sum(), leaves)
    ref = F.log_softmax(F.linear(hidden, weight, b), -1).gather(1, targets[:, None]).squeeze(1)
    g_ref = torch.autograd.grad((ref * weights).sum(), leaves)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert all(torch.allclose(a, e, atol=1e-5) for a, e in zip(g_ours, g_ref))


def test_bfloat16_keeps_its_dtype_in_the_gradient():
    logits, rows, cols, targets = _inputs(torch.bfloat16)
    ours = from_logits(logits, rows, cols, targets)
    assert ours.dtype == torch.float32  # the log-probs themselves are accumulated in fp32
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    assert grad.dtype == torch.bfloat16
    assert torch.allclose(ours, naive(logits.detach(), rows, cols, targets), atol=1e-4)
    hidden, weight, b, targets = _head()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the fused head's matmuls in autocast's dtype
        ours = _HeadLogProbs.apply(hidden.bfloat16(), weight, b, targets, CHUNK)
    g_hidden, g_weight = torch.autograd.grad(ours.sum(), [hidden, weight])
    assert ours.dtype == torch.float32 and g_hidden.dtype == torch.float32 and g_weight.dtype == torch.float32
    ref = F.log_softmax(F.linear(hidden.bfloat16(), weight.bfloat16(), b.bfloat16()).float(), -1)
    assert torch.allclose(ours, ref.gather(1, targets[:, None]).squeeze(1), atol=1e-3)


class _Largest(TorchDispatchMode):
    """The largest tensor with a vocabulary-sized last dimension that any operation returns (fp32 only, or any)."""

    def __init__(self, any_dtype=False):
        super().__init__()
        self.any_dtype, self.largest, self.big = any_dtype, 0, set()  # big: storages larger than one chunk

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in inputs:
                continue  # a view or an in-place result: nothing allocated
            if (self.any_dtype or t.dtype == torch.float32) and t.dim() and t.shape[-1] == V:
                self.largest = max(self.largest, t.numel())
                if t.numel() > CHUNK * V:
                    self.big.add(t.untyped_storage().data_ptr())
        return out


def test_from_logits_the_forward_holds_no_more_than_a_chunk_of_fp32_vocabulary_rows():
    logits, rows, cols, targets = _inputs(torch.bfloat16)  # bf16 logits: fp32 vocabulary tensors are the function's
    with _Largest() as seen:
        from_logits(logits, rows, cols, targets)
    assert 0 < seen.largest <= CHUNK * V
    with _Largest() as seen:
        naive(logits, rows, cols, targets)
    assert seen.largest == len(rows) * V  # what the naive computation makes: every position's fp32 log_softmax
    logits32, rows, cols, targets = _inputs()
    ours = from_logits(logits32, rows, cols, targets)
    with _Largest() as seen:
        torch.autograd.grad(ours.sum(), logits32)
    # the backward: one chunk's softmax at a time, added into the logits' gradient (which autograd needs anyway)
    assert seen.largest == B * T * V and len(seen.big) == 1


def test_fused_head_makes_no_more_than_a_chunk_of_vocabulary_rows_in_either_direction():
    hidden, weight, b, targets = _head()
    with _Largest(any_dtype=True) as seen:
        ours = _HeadLogProbs.apply(hidden, weight, b, targets, CHUNK)
        torch.autograd.grad(ours.sum(), [hidden, weight, b])
    assert 0 < seen.largest <= CHUNK * V and not seen.big  # no logits, no logits' gradient, beyond a chunk
    with _Largest(any_dtype=True) as seen:
        ref = F.log_softmax(F.linear(hidden, weight, b), -1).gather(1, targets[:, None])
        torch.autograd.grad(ref.sum(), [hidden, weight, b])
    assert seen.largest == len(hidden) * V
