"""What the LLM loop asks of its models, as one mixin of `LLMAIHF`: log-probs of responses (the LM head fused in,
prompts shared where they repeat), samples, and the explicit reward's scores on its own tokens."""

from __future__ import annotations

import torch

from aihf.llm.sequences import generate, packed_logps, pad_right, response_logps


class Scoring:
    @property
    def fixed_reference(self):
        """π_ref of the DPO term, the KL and the implicit reward: never refreshed (self-play refreshes `reference`)."""
        if self.anchor is None and self.reference is None:
            raise RuntimeError("π_ref was released after its log-probs of the pairs were precomputed "
                               "(llm.train.reference_logps=precomputed), and something other than those pairs asked "
                               "for it")
        return self.anchor if self.anchor is not None else self.reference

    @property
    def fused(self) -> bool:
        """Whether log-probs fuse the LM head in (llm.train.fused_head; not under FSDP, whose head is sharded)."""
        return self.cfg.llm.train.fused_head and not str(self.cfg.trainer.get("strategy")).startswith("fsdp")

    def logps(self, model, prompts, responses):
        return response_logps(model, prompts, responses, self.tokenizer.pad_token_id, self.device,
                              self.cfg.llm.train.logp_chunk, self.fused)

    def group_logps(self, model, prompts, responses: list[list[list[int]]]):
        """log π and token counts of k responses per prompt (responses[j][i]: the j-th response to prompt i)."""
        if len(responses) > 1 and self.cfg.llm.train.share_prompt and prompts:
            packed = packed_logps(model, prompts, responses, self.tokenizer.pad_token_id, self.device,
                                  self.cfg.llm.train.logp_chunk, self.fused)
            if packed is not None:
                return packed
        n = len(prompts)  # one forward pass of every (prompt, response) row, as TRL concatenates chosen and rejected
        logps, counts = self.logps(model, prompts * len(responses), [r for rs in responses for r in rs])
        return ([logps[j * n:(j + 1) * n] for j in range(len(responses))],
                [counts[j * n:(j + 1) * n] for j in range(len(responses))])

    def pair_logps(self, model, prompts, first, second):
        """log π of two responses per prompt in one call: (first's, second's), (their token counts)."""
        return self.group_logps(model, prompts, [first, second])

    def repeated_logps(self, model, prompts, responses, k: int):
        """`logps` of rows whose prompts come k at a time (prompt i at rows i·k … i·k + k − 1), in row order."""
        unique = prompts[::k]
        lps, ns = self.group_logps(model, unique, [responses[j::k] for j in range(k)])
        return torch.stack(lps, 1).reshape(-1), torch.stack(ns, 1).reshape(-1)

    def sample(self, model, prompts, greedy=False) -> list[list[int]]:
        t = self.cfg.llm.train
        return generate(model, prompts, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, t.max_new_tokens,
                        t.temperature, greedy, self.device)

    def to_reward_ids(self, responses: list[list[int]]) -> list[list[int]]:
        """Policy token ids → reward token ids (the identity when both share a tokenizer)."""
        if self.reward_encoder is self.encoder:
            return responses
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [self.reward_encoder.response(t, 0) for t in texts]

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """r_φ(x, y) on reward token ids, reading the response's last token."""
        limit = self.cfg.llm.reward.max_length
        pairs = [(p, r[: max(1, limit - len(p))]) for p, r in zip(prompts, responses)]
        ids, attn, _ = pad_right([p for p, _ in pairs], [r for _, r in pairs], self.reward_encoder.tok.pad_token_id,
                                 self.device)
        return self.reward(ids, attn)

    def pair_scores(self, prompts, first, second) -> tuple[torch.Tensor, torch.Tensor]:
        """r_φ of two responses per prompt in one forward pass."""
        scores = self.score(prompts + prompts, first + second)
        return scores[:len(prompts)], scores[len(prompts):]
