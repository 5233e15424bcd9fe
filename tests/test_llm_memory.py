"""Memory options of the LLM domain: LoRA through peft with π_ref as the adapter-disabled base (no second copy),
gradient checkpointing that leaves the gradients unchanged, and bf16 through Lightning's precision."""

import json

import pytest
import torch

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
