"""Token sequences: padding, response log-probabilities and sampling. Prompt tokens never enter a loss."""

from __future__ import annotations

import torch


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
    """log softmax(logits[p])[target[p]] at the selected flat positions p, in chunks of positions.

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
            grad[pos] = chunk_grad.to(grad.dtype)
        return grad.view_as(logits), None, None, None


def target_logps(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """log π(ids[:, t+1] | ids[:, ≤t]) where mask[:, t+1], else 0: shape (batch, length − 1)."""
    b, length = ids.shape
    sel = mask[:, 1:].reshape(-1).nonzero().squeeze(1)  # flat (row, t) positions over length − 1 columns
    rows, cols = sel // (length - 1), sel % (length - 1)
    positions = rows * length + cols  # the same positions in the logits' (batch · length) rows
    targets = ids[rows, cols + 1]
    values = _TargetLogProbs.apply(logits.contiguous(), positions, targets, chunk)
    out = torch.zeros(b * (length - 1), dtype=values.dtype, device=values.device)
    return out.index_put((sel,), values).view(b, length - 1)


def response_logps(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None,
                   chunk: int = 512):
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens, and the number of response tokens, per row."""
    ids, attn, resp = pad_right(prompts, responses, pad_id, device)
    logits = model(input_ids=ids, attention_mask=attn).logits
    return target_logps(logits, ids, resp, chunk).sum(-1), resp[:, 1:].sum(-1)


def _forward_parameters(model) -> set[str]:
    """The argument names of the underlying transformers model's forward (through a PEFT or reference wrapper)."""
    import inspect

    from aihf.llm.models import base_model
    return set(inspect.signature(base_model(model).forward).parameters)


def shared_prompt_logps(model, prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int, device=None,
                        chunk: int = 512):
    """`response_logps` for k responses to each prompt, with each prompt run through the model once.

    The prompts (left-padded, positions counted from each row's first real token) go through the model once, their
    key/value cache is repeated for the k responses, and the responses (right-padded) continue from it. The first
    response token is scored by the prompt's last logits, the others by the response pass; gradients flow through
    the cache into the prompt pass. Where prompts are long this saves (k − 1) of k prompt forwards and backwards
    and their activations. Returns (log-probs, token counts), each k tensors of shape (len(prompts),); or None when
    the model gives no repeatable cache (then the caller scores one row per response).
    """
    k, n = len(responses), len(prompts)
    p_ids, p_attn = pad_left(prompts, pad_id, device)
    p_pos = (p_attn.cumsum(-1) - 1).clamp(min=0)
    accepts = _forward_parameters(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}  # the prompt's last logits only
    # transformers ≥ 5.2x names the key/value cache argument `cache` (`past_key_values` before, deprecated)
    cache_keyword = "cache" if "cache" in accepts else "past_key_values"
    out = model(input_ids=p_ids, attention_mask=p_attn, position_ids=p_pos, use_cache=True, **keep)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(k)  # row i·k + j: prompt i, response j
    rows = [r for i in range(n) for r in (responses[j][i] for j in range(k))]
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((n * k, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n * k, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, :len(r)] = 1
    ids, attn = ids.to(p_ids.device), attn.to(p_ids.device)
    lengths = p_attn.sum(-1).repeat_interleave(k)
    # padding slots get position 0: past the last real token they could exceed the model's positions
    pos = (lengths[:, None] + torch.arange(width, device=ids.device)[None]).masked_fill(attn == 0, 0)
    r_out = model(input_ids=ids, attention_mask=torch.cat([p_attn.repeat_interleave(k, 0), attn], 1),
                  position_ids=pos, use_cache=False, **{cache_keyword: cache})
    rest = target_logps(r_out.logits, ids, attn.bool(), chunk).sum(-1).view(n, k)
    counts = attn.sum(-1).view(n, k)
    last = out.logits[:, -1].contiguous()  # each prompt's next-token logits: they score every response's first token
    rows_n = torch.arange(n, device=ids.device)
    firsts = [_TargetLogProbs.apply(last, rows_n, ids[j::k, 0], chunk) * (counts[:, j] > 0) for j in range(k)]
    return [firsts[j] + rest[:, j] for j in range(k)], [counts[:, j] for j in range(k)]


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
