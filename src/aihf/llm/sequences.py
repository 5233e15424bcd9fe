"""Token sequences: padding, response log-probabilities and sampling. Prompt tokens never enter a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def response_logps(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None):
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens, and the number of response tokens, per row."""
    ids, attn, resp = pad_right(prompts, responses, pad_id, device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    targets = ids[:, 1:]
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    mask = resp[:, 1:]
    return (token_logps * mask).sum(-1), mask.sum(-1)


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
