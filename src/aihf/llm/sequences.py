"""Token sequences: padding, response log-probabilities and sampling. Prompt tokens never enter a loss."""

from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F
from torch import nn


def pad_right(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None):
    """[prompt | response | pad] rows → input_ids, attention_mask and a mask of the response positions."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    resp = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, :len(s)] = 1
        resp[i, len(p):len(s)] = True
    return ids.to(device), attn.to(device), resp.to(device)


def pad_left(prompts: list[list[int]], pad_id: int, device=None):
    """Generation pads on the left, so every row's next token follows its own last prompt token."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[i, width - len(p):] = 1
    return ids.to(device), attn.to(device)


class _TargetLogProbs(torch.autograd.Function):
    """log softmax(logits[p])[target[p]] at the selected flat positions p (repeats allowed), in chunks of positions.

    Neither direction holds a vocabulary-sized float32 tensor beyond one chunk's: the forward keeps only the
    log-normaliser of each position, the backward recomputes each chunk's softmax and writes the chunk's gradient
    (in the logits' own dtype) into the one gradient tensor autograd needs anyway. A full-vocabulary fp32
    log_softmax of every position (about 1.6 GB for SmolLM2-135M at 64 × 128 tokens) is never made.
    """

    @staticmethod
    def forward(ctx, logits, positions, targets, chunk):
        flat = logits.view(-1, logits.shape[-1])
        out = torch.empty(len(positions), dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for s in range(0, len(positions), chunk):
            rows = flat[positions[s:s + chunk]].float()
            lse[s:s + chunk] = torch.logsumexp(rows, dim=-1)
            out[s:s + chunk] = rows.gather(1, targets[s:s + chunk, None]).squeeze(1) - lse[s:s + chunk]
        ctx.save_for_backward(logits, positions, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, positions, targets, lse = ctx.saved_tensors
        flat = logits.view(-1, logits.shape[-1])
        grad = torch.zeros_like(flat)
        for s in range(0, len(positions), ctx.chunk):
            pos, g = positions[s:s + ctx.chunk], grad_out[s:s + ctx.chunk, None]
            chunk_grad = torch.exp(flat[pos].float() - lse[s:s + ctx.chunk, None]).mul_(-g)  # −g·softmax
            chunk_grad.scatter_add_(1, targets[s:s + ctx.chunk, None], g)  # + g at the target
            grad.index_add_(0, pos, chunk_grad.to(grad.dtype))  # a position may read several targets (packed)
        return grad.view_as(logits), None, None, None


class _HeadLogProbs(torch.autograd.Function):
    """log softmax(hidden @ Wᵀ + b)[target] per row, the LM head fused in: the logits exist only a chunk of rows at a
    time, in both directions (the backward recomputes each chunk's logits, as TRL's fused head does), so neither a
    (positions × vocabulary) tensor nor its gradient is ever made. Matmuls run in autocast's dtype when it is on; the
    normaliser, the log-probs and the head's gradient accumulate in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        kind = hidden.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        out = torch.empty(len(hidden), dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for s in range(0, len(hidden), chunk):
            logits = F.linear(hidden[s:s + chunk].to(dtype), w, b).float()
            lse[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s:s + chunk] = logits.gather(1, targets[s:s + chunk, None]).squeeze(1) - lse[s:s + chunk]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.dtype = chunk, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        dtype, chunk = ctx.dtype, ctx.chunk
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        g_hidden = torch.empty_like(hidden) if need_h else None
        g_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        g_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for s in range(0, len(hidden), chunk):
            h, g = hidden[s:s + chunk].to(dtype), grad_out[s:s + chunk, None].float()
            grad = F.linear(h, w, b).float().sub_(lse[s:s + chunk, None]).exp_().mul_(-g)  # −g·softmax
            grad.scatter_add_(1, targets[s:s + chunk, None], g)  # + g at the target
            if g_bias is not None:
                g_bias += grad.sum(0)
            grad = grad.to(dtype)
            if g_hidden is not None:
                g_hidden[s:s + chunk] = grad @ w
            if g_weight is not None:
                g_weight += (grad.t() @ h).float()
        return (g_hidden, None if g_weight is None else g_weight.to(weight.dtype),
                None if g_bias is None else g_bias.to(bias.dtype), None, None)


# Config keys of models whose logits are not their LM head applied to the last hidden state (softcapping, scaling)
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def _hidden_forward(self, *args, aihf_hidden: bool = False, **kwargs):
    """A causal LM's forward that, asked with aihf_hidden=True, stops before its LM head (its backbone's output)."""
    if not aihf_hidden:
        return type(self).forward(self, *args, **kwargs)
    kwargs.pop("logits_to_keep", None)
    return getattr(self, self.base_model_prefix)(*args, **kwargs)


def fused_head(model) -> nn.Linear | None:
    """The LM head of the transformers model that `model` runs (through a PEFT or reference wrapper), its forward
    taught to return the last hidden state, when the model's logits are exactly that head applied to it: no logit
    transform in its config, a plain nn.Linear head (not a LoRA-wrapped one), and equal logits on a probe input,
    checked once per model. None otherwise: the model is then scored from its own logits."""
    from aihf.llm.models import base_model
    base = base_model(model)
    known = base.__dict__.get("_aihf_fused_head")
    if known is None:
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        config = base.config.get_text_config() if hasattr(base, "config") else None
        known = (type(head) is nn.Linear and config is not None and getattr(base, "base_model_prefix", "")
                 and not any(getattr(config, k, None) not in (None, 1, 1.0) for k in _LOGIT_TRANSFORMS)
                 and "forward" not in base.__dict__)  # another wrapper on this instance (offload hooks, ...) stays
        if known:
            # with the class's own signature: generate() reads it to decide, e.g., whether to pass position ids
            forward = functools.wraps(type(base).forward)(functools.partial(_hidden_forward))  # a fresh function
            base.forward = types.MethodType(forward, base)  # rebinds to the copy under deepcopy
            known = _head_reproduces_logits(base, head)
        base._aihf_fused_head = bool(known)
    return base.get_output_embeddings() if known else None


@torch.no_grad()
def _head_reproduces_logits(base, head: nn.Linear) -> bool:
    was_training = base.training
    base.eval()  # no dropout: both passes must see the same activations
    try:
        probe = (torch.arange(2, 8, device=head.weight.device) % head.out_features)[None]
        logits = base(input_ids=probe).logits.float()
        ours = head(base(input_ids=probe, aihf_hidden=True).last_hidden_state).float()
        return ours.shape == logits.shape and torch.allclose(ours, logits, rtol=1e-4, atol=1e-4)
    finally:
        base.train(was_training)


def selected_logps(model, ids, attention_mask, rows, cols, targets, chunk: int, fused: bool = True,
                   position_ids=None) -> torch.Tensor:
    """log π(targets[m] | the sequence read up to position (rows[m], cols[m])), one value per target, fp32.

    With `fused` and a model whose logits are its LM head on the last hidden state (`fused_head`), only the hidden
    states of the selected positions reach the head, in chunks (`_HeadLogProbs`): no logits of prompt or padding
    positions and no (positions × vocabulary) tensor. Otherwise from the model's logits (`_TargetLogProbs`)."""
    kwargs = {"input_ids": ids, "attention_mask": attention_mask, "use_cache": False}  # no key/value cache to keep
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    head = fused_head(model) if fused else None
    if head is not None:
        hidden = model(**kwargs, aihf_hidden=True).last_hidden_state
        return _HeadLogProbs.apply(hidden[rows, cols], head.weight, head.bias, targets, chunk)
    logits = model(**kwargs).logits
    return _TargetLogProbs.apply(logits.contiguous(), rows * logits.shape[1] + cols, targets, chunk)


def response_logps(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None,
                   chunk: int = 512, fused: bool = True):
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens, and the number of response tokens, per row."""
    ids, attn, resp = pad_right(prompts, responses, pad_id, device)
    rows, cols = resp[:, 1:].nonzero(as_tuple=True)  # token (row, cols + 1) is read at position (row, cols)
    values = selected_logps(model, ids, attn, rows, cols, ids[rows, cols + 1], chunk, fused)
    out = torch.zeros(len(ids), dtype=values.dtype, device=values.device).index_add(0, rows, values)
    return out, resp[:, 1:].sum(-1)


def packed_logps(model, prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int, device=None,
                 chunk: int = 512, fused: bool = True):
    """`response_logps` for k responses to each prompt, the prompt run through the model once.

    One row per prompt, [prompt | response 1 | … | response k], under a 4-D attention mask in which each response
    attends to the prompt and to its own earlier tokens only, at the positions it would have after the prompt
    alone; the first token of every response is read at the prompt's last position. So each response's log-probs
    (and gradients) are those of its own [prompt | response] row, while the prompt's tokens are computed once
    instead of k times (prefix sharing, as in Wang et al. 2024, "Accelerating Direct Preference Optimization with
    Prefix Sharing"). Returns (log-probs, token counts), k tensors of shape (len(prompts),) each; None when the
    model's attention cannot take such a mask (flash-attention; or packing does not reproduce one row per response
    on a probe, checked once per model: ALiBi, say), a row is longer than the model's local attention window (the
    custom mask replaces the model's own, window included), or a prompt is empty: then the caller scores one row
    per response."""
    from aihf.llm.models import base_model
    if not all(prompts) or not _packable(base_model(model), _packed_width(prompts, responses)):
        return None
    return _packed(model, prompts, responses, pad_id, device, chunk, fused)


def _packed_width(prompts, responses) -> int:
    return max(len(p) + sum(len(rs[i]) for rs in responses) for i, p in enumerate(prompts))


def _packed(model, prompts, responses, pad_id, device, chunk, fused):
    from aihf.llm.models import base_model
    k, n, width = len(responses), len(prompts), _packed_width(prompts, responses)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)  # -1 padding, 0 prompt, j + 1 response j
    pos = torch.zeros((n, width), dtype=torch.long)
    rows, cols, targets, owner = [], [], [], []
    for i, p in enumerate(prompts):
        ids[i, :len(p)], segment[i, :len(p)], pos[i, :len(p)] = torch.tensor(p), 0, torch.arange(len(p))
        at = len(p)
        for j in range(k):
            r = responses[j][i]
            ids[i, at:at + len(r)], segment[i, at:at + len(r)] = torch.tensor(r, dtype=torch.long), j + 1
            pos[i, at:at + len(r)] = torch.arange(len(p), len(p) + len(r))
            if r:  # its first token is read at the prompt's last position, the others each at the one before
                rows += [i] * len(r)
                cols += [len(p) - 1] + list(range(at, at + len(r) - 1))
            targets += r
            owner += [j * n + i] * len(r)
            at += len(r)
    q, kv = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (kv >= 0) & ((kv == 0) | (kv == q))
    allowed |= torch.eye(width, dtype=torch.bool) & (q == -1)  # padding sees itself: no all-masked (NaN) row
    mask = allowed[:, None]
    if base_model(model).config._attn_implementation == "eager":  # eager attention adds its mask to the scores
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)
    values = selected_logps(model, ids.to(device), mask.to(device), as_tensor(rows), as_tensor(cols),
                            as_tensor(targets), chunk, fused, position_ids=pos.to(device))
    sums = torch.zeros(k * n, dtype=values.dtype, device=values.device).index_add(0, as_tensor(owner), values)
    counts = torch.tensor([len(responses[j][i]) for j in range(k) for i in range(n)], device=values.device)
    return [sums[j * n:(j + 1) * n] for j in range(k)], [counts[j * n:(j + 1) * n] for j in range(k)]


# Config keys of local (windowed or chunked) attention, which a custom 4-D mask would override
_LOCAL_ATTENTION = ("sliding_window", "window_size", "attention_chunk_size")


def _packable(base, width: int) -> bool:
    """Whether `packed_logps` may pack rows `width` tokens wide for this transformers model."""
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    text = config.get_text_config()
    if any(isinstance(getattr(text, key, None), int) and width > getattr(text, key) for key in _LOCAL_ATTENTION):
        return False
    known = base.__dict__.get("_aihf_packing")
    if known is None:
        known = base._aihf_packing = _packing_reproduces_rows(base)
    return known


@torch.no_grad()
def _packing_reproduces_rows(base) -> bool:
    was_training = base.training
    base.eval()  # no dropout: both ways must see the same activations
    try:
        vocab = base.get_input_embeddings().num_embeddings
        prompts, responses = [[2, 3, 4], [5, 6]], [[[7, 8], [9]], [[10], [11, 12, 13]]]
        prompts, responses = [[t % vocab for t in p] for p in prompts], [[[t % vocab for t in r] for r in rs]
                                                                         for rs in responses]
        device = base.get_input_embeddings().weight.device
        rows, _ = response_logps(base, prompts * 2, responses[0] + responses[1], 0, device, fused=False)
        packed = _packed(base, prompts, responses, 0, device, 512, fused=False)[0]
        return torch.allclose(torch.cat(packed), rows, rtol=1e-4, atol=1e-4)
    except Exception:  # a model whose attention cannot take the mask at all (e.g. ALiBi's shape checks)
        return False
    finally:
        base.train(was_training)


@torch.no_grad()
def generate(model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int,
             temperature: float = 1.0, greedy: bool = False, device=None) -> list[list[int]]:
    """Sample (or greedily decode) one response per prompt, cut after its first eos.

    Samples come from the full distribution (no top-k/top-p), so log π of a sample is the policy's own and the
    KL and policy-gradient estimates stay unbiased.
    """
    ids, attn = pad_left(prompts, pad_id, device)
    was_training = model.training
    model.eval()
    kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                         eos_token_id=eos_id, **kwargs)
    model.train(was_training)
    responses = []
    for row in out[:, ids.shape[1]:].tolist():
        if eos_id in row:
            row = row[:row.index(eos_id) + 1]
        responses.append(row)
    return responses
