"""Response log-probs without a full-vocabulary fp32 tensor: equal to the naive log_softmax computation (values and
gradients), and no float32 tensor of more than one chunk's positions × vocabulary is made in the forward pass."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from aihf.llm.sequences import target_logps

B, T, V, CHUNK = 3, 9, 50, 4


def naive(logits, ids, mask):
    lp = torch.gather(F.log_softmax(logits[:, :-1].float(), dim=-1), 2, ids[:, 1:, None]).squeeze(-1)
    return lp * mask[:, 1:]


def _inputs(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(B, T, V, generator=gen)).to(dtype).requires_grad_(True)
    ids = torch.randint(V, (B, T), generator=gen)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 2:7], mask[1, 4:9], mask[2, 1:3] = True, True, True  # responses of different lengths and offsets
    return logits, ids, mask


@pytest.mark.parametrize("chunk", [1, CHUNK, 1000])
def test_equals_the_full_softmax_computation(chunk):
    logits, ids, mask = _inputs()
    weights = torch.randn(B, T - 1, generator=torch.Generator().manual_seed(1))
    ours = target_logps(logits, ids, mask, chunk)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    ref = naive(logits, ids, mask)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, atol=1e-5)
    assert (ours[~mask[:, 1:]] == 0).all()


def test_bfloat16_logits_keep_their_dtype_in_the_gradient():
    logits, ids, mask = _inputs(torch.bfloat16)
    ours = target_logps(logits, ids, mask, CHUNK)
    assert ours.dtype == torch.float32  # the log-probs themselves are accumulated in fp32
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    assert grad.dtype == torch.bfloat16
    assert torch.allclose(ours, naive(logits.detach(), ids, mask), atol=1e-4)


class _Largest(TorchDispatchMode):
    """The largest float32 tensor with a vocabulary-sized last dimension that any operation returns."""

    def __init__(self):
        super().__init__()
        self.largest, self.big = 0, set()  # big: the storages of those larger than one chunk

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in inputs:
                continue  # a view or an in-place result: nothing allocated
            if t.dtype == torch.float32 and t.dim() and t.shape[-1] == V:
                self.largest = max(self.largest, t.numel())
                if t.numel() > CHUNK * V:
                    self.big.add(t.untyped_storage().data_ptr())
        return out


def test_forward_holds_no_more_than_a_chunk_of_fp32_vocabulary_rows():
    logits, ids, mask = _inputs(torch.bfloat16)  # bf16 logits: any fp32 vocabulary tensor is made by the function
    with _Largest() as seen:
        target_logps(logits, ids, mask, CHUNK)
    assert 0 < seen.largest <= CHUNK * V
    with _Largest() as seen:
        naive(logits, ids, mask)
    assert seen.largest == B * (T - 1) * V  # what the naive computation makes: every position's fp32 log_softmax
    logits32, ids, mask = _inputs()
    ours = target_logps(logits32, ids, mask, CHUNK)
    with _Largest() as seen:
        torch.autograd.grad(ours.sum(), logits32)
    # the backward: one chunk's softmax at a time, written into the logits' gradient (which autograd needs anyway)
    assert seen.largest == B * T * V and len(seen.big) == 1
