"""Memory options of the LLM domain: LoRA through peft with π_ref as the adapter-disabled base (no second copy),
gradient checkpointing that leaves the gradients unchanged, and bf16 through Lightning's precision."""

import json

import pytest
import torch
from torch import nn

from aihf.errors import ConfigError
from aihf.llm.module import LLMAIHF
from conftest import fit, llm_cfg

LORA = ["llm.policy.lora_r=4", "llm.policy.lora_alpha=8", "algo.bc_warmstart_steps=3", "llm.train.policy_steps=3",
        "llm.policy.warmstart_lr=1e-2", "llm.policy.lr=1e-2"]


def _logps(module, model, rows):
    with torch.no_grad():
        lp, _ = module.logps(model, [r["prompt"] for r in rows], [r["chosen"] for r in rows])
    return lp


def _capture_at_freeze(module, monkeypatch) -> dict:
    """The policy's log-probs and weights right after π_ref ← π."""
    seen, real = {}, module.freeze_reference

    def freeze():
        real()
        seen["logps"] = _logps(module, module.policy, module.data["prefs"][:8])
        seen["weights"] = {k: v.clone() for k, v in module.policy.named_parameters()}
        if module.reward is not None:
            seen["reward"] = {k: v.clone() for k, v in module.reward.named_parameters()}
    monkeypatch.setattr(module, "freeze_reference", freeze)
    return seen


def test_lora_reference_is_the_sft_policy_without_a_copy(sort_data, tmp_path, monkeypatch):
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, LORA))
    seen = _capture_at_freeze(module, monkeypatch)
    fit(module, tmp_path)
    prefs = module.data["prefs"][:8]
    # π_ref (the base with the adapter off) is the policy as it was when π_ref was fixed, after SFT
    assert torch.allclose(_logps(module, module.reference, prefs), seen["logps"], atol=1e-5)
    assert not torch.allclose(_logps(module, module.policy, prefs), seen["logps"], atol=1e-3)  # π has moved on
    assert not any(k.startswith("reference.") for k in module.state_dict())  # no second copy of the weights
    # the main stage trained the adapter only; the base weights are those fixed at the freeze
    now = dict(module.policy.named_parameters())
    for name, before in seen["weights"].items():
        assert torch.equal(now[name], before) == ("lora_" not in name), name


def test_lora_sft_stage_changes_what_the_base_computes(sort_data, tmp_path, monkeypatch):
    """The SFT adapter is folded into the base at the freeze: π_ref is the SFT policy, not the untrained model."""
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, LORA))
    start = _logps(module, module.policy, module.data["prefs"][:8])
    seen = _capture_at_freeze(module, monkeypatch)
    fit(module, tmp_path)
    assert not torch.allclose(seen["logps"], start, atol=1e-3)


def test_lora_reward_starts_from_the_merged_policy(sort_data, tmp_path, monkeypatch):
    module = LLMAIHF(llm_cfg("rlhf", sort_data, tmp_path, [*LORA, "algo.reward_pretrain_steps=1"]))
    seen = _capture_at_freeze(module, monkeypatch)
    fit(module, tmp_path)
    policy = {k.replace(".base_layer", ""): v for k, v in seen["weights"].items() if "lora_" not in k}
    prefix = "base_model.model.model."
    copied = {k[len("model.model."):]: v for k, v in seen["reward"].items() if k.startswith("model.model.")}
    assert copied and all(torch.equal(v, policy[prefix + k]) for k, v in copied.items())


def test_lora_with_a_moving_reference_is_refused(sort_data, tmp_path):
    with pytest.raises(ConfigError, match=r"^algo.reference_refresh_every=100 with llm.policy.lora_r=4: .*lora_r=0$"):
        LLMAIHF(llm_cfg("aihf_selfplay", sort_data, tmp_path, LORA))


def test_gradient_checkpointing_keeps_the_gradients(sort_data, tmp_path):
    grads = []
    for flag in ("false", "true"):
        torch.manual_seed(0)
        module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / flag, [f"llm.policy.gradient_checkpointing={flag}"]))
        module.policy.train()
        loss, _ = module.implicit_objective(None, module.data["prefs"][:8])
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in module.policy.named_parameters()})
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
    assert module.policy.is_gradient_checkpointing


def test_bf16_mixed_precision_trains(sort_data, tmp_path, monkeypatch):
    from aihf.app import train
    from aihf.llm import sequences
    dtypes, real = set(), sequences.target_logps
    monkeypatch.setattr(sequences, "target_logps", lambda logits, *a: dtypes.add(logits.dtype) or real(logits, *a))
    result = train(llm_cfg("dpo", sort_data, tmp_path, ["trainer.precision=bf16-mixed", "algo.bc_warmstart_steps=2"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and result["steps"] == 5
    losses = [h for h in metrics["history"] if "eval/pref_accuracy" in h]
    assert losses and all(0 <= h["eval/pref_accuracy"] <= 1 for h in losses)
    assert torch.bfloat16 in dtypes  # the forward passes ran under Lightning's bf16 autocast


def _tiny(arch: str):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig
    torch.manual_seed(0)
    config = (LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0)
              if arch == "llama" else
              GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1))
    return AutoModelForCausalLM.from_config(config).eval()  # eval: no dropout, so both ways compute the same


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prompt_log_probs_equal_one_row_per_response(arch):
    """Each prompt run once, its cache continued by k responses: the same log-probs, counts and gradients as one
    [prompt | response] row per response (prompts of different lengths, so the positions must follow each row's
    own prompt; an empty response scores 0)."""
    import random
    from aihf.llm.sequences import response_logps, shared_prompt_logps
    model, rng = _tiny(arch), random.Random(0)
    prompts = [[rng.randrange(2, 50) for _ in range(rng.randrange(1, 9))] for _ in range(5)]
    answers = [[[rng.randrange(2, 50) for _ in range(rng.randrange(1, 7))] for _ in range(5)] for _ in range(3)]
    answers[2][3] = []
    weights = torch.randn(15, generator=torch.Generator().manual_seed(1))
    rows, counts = response_logps(model, prompts * 3, [r for rs in answers for r in rs], 0)
    expected = torch.autograd.grad((rows * weights).sum(), list(model.parameters()))
    shared, shared_counts = shared_prompt_logps(model, prompts, answers, 0, chunk=3)
    got = torch.autograd.grad((torch.cat(shared) * weights).sum(), list(model.parameters()))
    assert torch.allclose(torch.cat(shared), rows, atol=1e-5)
    assert torch.equal(torch.cat(shared_counts), torch.tensor([len(r) for rs in answers for r in rs]))
    assert shared[2][3] == 0
    assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected))


@pytest.mark.parametrize("extra", [[], LORA[:2]])
def test_dpo_and_rloo_steps_are_the_same_with_a_shared_prompt(sort_data, tmp_path, extra):
    """The DPO loss and gradients (policy and π_ref, a LoRA policy's adapter-disabled base too) and RLOO's
    per-sample log-probs equal those computed one row per response."""
    out = {}
    for share in ("false", "true"):
        torch.manual_seed(0)
        module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / share, [f"llm.train.share_prompt={share}", *extra]))
        module.policy.eval()
        loss, _ = module.implicit_objective(None, module.data["prefs"][:8])
        loss.backward()
        rows = module.data["prefs"][:4]
        prompts = [r["prompt"] for r in rows for _ in range(3)]
        responses = [r[k] for r in rows for k in ("chosen", "rejected", "chosen")]
        with torch.no_grad():
            rl = module.repeated_logps(module.fixed_reference, prompts, responses, 3)[0]
        out[share] = (loss.detach(), {k: p.grad.clone() for k, p in module.policy.named_parameters()
                                      if p.grad is not None}, rl)
    (l0, g0, r0), (l1, g1, r1) = out["false"], out["true"]
    assert torch.allclose(l0, l1, atol=1e-6) and torch.allclose(r0, r1, atol=1e-5)
    assert g0.keys() == g1.keys() and all(torch.allclose(g0[k], g1[k], atol=1e-5) for k in g0)


def test_shared_prompt_padding_stays_within_absolute_positions():
    """A GPT-2 of 16 positions, every real sequence within them: a padded slot after a short response must not ask
    for a position past the model's (12-token prompt + 2-token response beside a 2-token prompt + 12-token one)."""
    from transformers import AutoModelForCausalLM, GPT2Config
    from aihf.llm.sequences import response_logps, shared_prompt_logps
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4,
                                                        n_positions=16, pad_token_id=0)).eval()
    prompts, first, second = [list(range(2, 14)), [2, 3]], [[4, 5], list(range(20, 32))], [[6], [7, 8]]
    rows, _ = response_logps(model, prompts * 2, first + second, 0)
    (a, b), _ = shared_prompt_logps(model, prompts, [first, second], 0)
    assert torch.allclose(torch.cat([a, b]), rows, atol=1e-5)


def test_a_model_without_a_repeatable_cache_is_scored_one_row_per_response():
    from aihf.llm.sequences import shared_prompt_logps

    class NoCache(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, use_cache=None, **kwargs):
            return self.inner(use_cache=False, **kwargs)
    model = NoCache(_tiny("llama"))
    assert shared_prompt_logps(model, [[2, 3]], [[[4]], [[5]]], 0) is None
