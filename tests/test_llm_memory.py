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
    dtypes, real = set(), sequences._HeadLogProbs.apply
    monkeypatch.setattr(sequences._HeadLogProbs, "apply", lambda hidden, *a: dtypes.add(torch.get_autocast_dtype(
        "cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype) or real(hidden, *a))
    result = train(llm_cfg("dpo", sort_data, tmp_path, ["trainer.precision=bf16-mixed", "algo.bc_warmstart_steps=2"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and result["steps"] == 5
    losses = [h for h in metrics["history"] if "eval/pref_accuracy" in h]
    assert losses and all(0 <= h["eval/pref_accuracy"] <= 1 for h in losses)
    assert torch.bfloat16 in dtypes  # the log-probs' matmuls ran under Lightning's bf16 autocast


def _tiny(arch: str):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig
    torch.manual_seed(0)
    config = (LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0)
              if arch == "llama" else
              GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1))
    return AutoModelForCausalLM.from_config(config).eval()  # eval: no dropout, so both ways compute the same


def _prompts_and_answers(k=3):
    import random
    rng = random.Random(0)
    prompts = [[rng.randrange(2, 50) for _ in range(rng.randrange(1, 9))] for _ in range(5)]
    answers = [[[rng.randrange(2, 50) for _ in range(rng.randrange(1, 7))] for _ in range(5)] for _ in range(k)]
    if k > 2:
        answers[2][3] = []
    return prompts, answers


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_log_probs_equal_one_row_per_response(arch, attn, fused):
    """k responses packed behind their prompt in one row: the same log-probs, counts and gradients as one
    [prompt | response] row per response (prompts of different lengths, so the positions must follow each row's
    own prompt; an empty response scores 0), from the fused head or from the logits, under either attention."""
    from aihf.llm.sequences import packed_logps, response_logps
    model = _tiny(arch)
    model.config._attn_implementation = attn
    prompts, answers = _prompts_and_answers()
    weights = torch.randn(15, generator=torch.Generator().manual_seed(1))
    rows, counts = response_logps(model, prompts * 3, [r for rs in answers for r in rs], 0, fused=False)
    expected = torch.autograd.grad((rows * weights).sum(), list(model.parameters()))
    packed, packed_counts = packed_logps(model, prompts, answers, 0, chunk=3, fused=fused)
    got = torch.autograd.grad((torch.cat(packed) * weights).sum(), list(model.parameters()))
    assert torch.allclose(torch.cat(packed), rows, atol=1e-5)
    assert torch.equal(torch.cat(packed_counts), torch.tensor([len(r) for rs in answers for r in rs]))
    assert packed[2][3] == 0
    assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fused_head_equals_the_models_logits(arch):
    """The default path (the LM head fused in, response positions only) gives the log-probs and gradients that the
    model's own logits give; the model is recognised as one whose logits are its head on the last hidden state."""
    from aihf.llm.sequences import fused_head, response_logps
    model = _tiny(arch)
    prompts, answers = _prompts_and_answers(1)
    weights = torch.randn(5, generator=torch.Generator().manual_seed(1))
    plain, _ = response_logps(model, prompts, answers[0], 0, fused=False)
    expected = torch.autograd.grad((plain * weights).sum(), list(model.parameters()))
    fused, _ = response_logps(model, prompts, answers[0], 0, chunk=2)
    got = torch.autograd.grad((fused * weights).sum(), list(model.parameters()))
    assert fused_head(model) is model.get_output_embeddings()
    assert torch.allclose(fused, plain, atol=1e-5) and all(torch.allclose(g, e, atol=1e-5)
                                                           for g, e in zip(got, expected))
    # generate() reads the forward's signature (position ids, logits_to_keep): the taught forward keeps the class's
    import inspect
    assert inspect.signature(model.forward) == inspect.signature(type(model).forward.__get__(model))


def test_a_model_whose_logits_are_not_its_head_is_scored_from_its_logits():
    """Softcapped logits (a config key) and logits scaled inside the forward (caught by the probe) both fall back to
    the model's own logits, and so give its log-probs."""
    from transformers import LlamaForCausalLM
    from aihf.llm.sequences import fused_head, response_logps

    class Scaled(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out
    capped = _tiny("llama")
    capped.config.final_logit_softcapping = 30.0
    scaled = Scaled(_tiny("llama").config).eval()
    for model in (capped, scaled):
        assert fused_head(model) is None
    prompts, answers = _prompts_and_answers(1)
    ids = torch.tensor([prompts[0] + answers[0][0]])
    logits = scaled(input_ids=ids).logits[0, len(prompts[0]) - 1:-1]
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(answers[0][0])[:, None]).sum()
    assert torch.allclose(response_logps(scaled, prompts[:1], answers[0][:1], 0)[0][0], expected, atol=1e-5)


@pytest.mark.parametrize("extra", [[], LORA[:2], ["llm.policy.gradient_checkpointing=true"]])
def test_dpo_and_rloo_steps_are_the_same_with_a_shared_prompt(sort_data, tmp_path, extra):
    """The DPO loss and gradients (policy and π_ref, a LoRA policy's adapter-disabled base too, and under gradient
    checkpointing) and RLOO's per-sample log-probs equal those computed one row per response."""
    out = {}
    for share in ("false", "true"):
        torch.manual_seed(0)
        module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / share, [f"llm.train.share_prompt={share}", *extra]))
        module.policy.train()
        for m in module.policy.modules():  # training mode (checkpointing applies) without dropout
            if isinstance(m, nn.Dropout):
                m.p = 0.0
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


def test_packed_positions_stay_within_absolute_positions():
    """A GPT-2 of 16 positions whose packed rows are longer than that: each response is positioned after its
    prompt alone (12-token prompt + 2-token response beside a 2-token prompt + 12-token one)."""
    from transformers import AutoModelForCausalLM, GPT2Config
    from aihf.llm.sequences import packed_logps, response_logps
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4,
                                                        n_positions=16, pad_token_id=0)).eval()
    prompts, first, second = [list(range(2, 14)), [2, 3]], [[4, 5], list(range(20, 32))], [[6, 7, 8], [7, 8]]
    rows, _ = response_logps(model, prompts * 2, first + second, 0)
    (a, b), _ = packed_logps(model, prompts, [first, second], 0)
    assert torch.allclose(torch.cat([a, b]), rows, atol=1e-5)


def test_attention_that_takes_no_mask_is_scored_one_row_per_response():
    from aihf.llm.sequences import packed_logps
    model = _tiny("llama")
    model.config._attn_implementation = "flash_attention_2"
    assert packed_logps(model, [[2, 3]], [[[4]], [[5]]], 0) is None
    assert packed_logps(_tiny("llama"), [[]], [[[4]], [[5]]], 0) is None  # an empty prompt: nothing to share
    from transformers import AutoModelForCausalLM, MistralConfig
    windowed = AutoModelForCausalLM.from_config(MistralConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, sliding_window=4, pad_token_id=0)).eval()
    assert packed_logps(windowed, [[2]], [[[4, 5]], [[6]]], 0) is not None  # 4 wide: within the window
    assert packed_logps(windowed, [[2, 3]], [[[4, 5]], [[6]]], 0) is None  # 5 wide: the window would be lost
    from transformers import BloomConfig, GPTNeoConfig
    neo = AutoModelForCausalLM.from_config(GPTNeoConfig(  # local attention under another key
        vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
        window_size=3, pad_token_id=0)).eval()
    assert packed_logps(neo, [[2, 3]], [[[4, 5]], [[6]]], 0) is None
    alibi = AutoModelForCausalLM.from_config(BloomConfig(vocab_size=50, hidden_size=32, n_layer=1, n_head=4,
                                                         pad_token_id=0)).eval()
    assert packed_logps(alibi, [[2, 3]], [[[4, 5]], [[6]]], 0) is None  # its attention takes no such mask: the probe


def test_generation_is_unchanged_by_the_fused_head():
    """generate() decides from the forward's signature whether to pass position ids: a GPT-2 (absolute positions)
    with left-padded prompts samples the same before and after its forward is taught to stop before the head."""
    from aihf.llm.sequences import fused_head, generate
    model, prompts = _tiny("gpt2"), [[5, 6, 7, 8, 9, 10], [11, 12]]
    before = generate(model, prompts, 0, 1, 6, greedy=True)
    assert fused_head(model) is not None
    assert generate(model, prompts, 0, 1, 6, greedy=True) == before
