"""Policy, reference and reward are components built from their config nodes (`llm.policy._target_`,
`llm.reference._target_`, `llm.reward._target_`): a researcher's own builders plug in by dotted path, with no edit to
aihf — another model family, a PEFT-wrapped model, a separately loaded reference, a reward of their own."""

from __future__ import annotations

import torch
from torch import nn

from aihf.llm.module import LLMAIHF
from conftest import fit, llm_cfg

HERE = "test_llm_components"


def gpt2_policy(tokenizer, hidden_size, num_layers, max_positions, **_):
    """Another model family, by a user's own function."""
    from transformers import GPT2Config, GPT2LMHeadModel
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=num_layers, n_head=4,
                                      n_positions=max_positions, pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))


def lora_gpt2_policy(tokenizer, **kw):
    """A PEFT-wrapped model built outside aihf."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(gpt2_policy(tokenizer, **kw), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                                   task_type="CAUSAL_LM"))


SAVED = {}


def saved_reference(policy):
    """π_ref loaded separately (here: a copy of the policy with its weights perturbed, kept in SAVED)."""
    import copy
    ref = copy.deepcopy(policy).requires_grad_(False).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    SAVED["ref"] = ref
    return ref


class BigramReward(nn.Module):
    """A small explicit reward of one's own: a learned score per pair of consecutive tokens, summed. The interface
    aihf needs: forward(input_ids, attention_mask) -> scores, a tokenizer, same_tokenizer and max_length."""

    def __init__(self, policy, policy_tokenizer, max_length, **_):
        super().__init__()
        self.tokenizer, self.same_tokenizer, self.max_length = policy_tokenizer, True, max_length
        self.scores = nn.Parameter(torch.zeros(len(policy_tokenizer), len(policy_tokenizer)))

    def forward(self, input_ids, attention_mask):
        both = attention_mask[:, 1:] * attention_mask[:, :-1]
        return (self.scores[input_ids[:, :-1], input_ids[:, 1:]] * both).sum(1)


def test_a_policy_of_another_family_from_a_users_function_trains(sort_data, tmp_path):
    torch.manual_seed(0)
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, [f"llm.policy._target_={HERE}.gpt2_policy",
                                                          "algo.bc_warmstart_steps=2"]))
    before = {k: v.clone() for k, v in module.policy.named_parameters()}
    fit(module, tmp_path)
    assert type(module.policy).__name__ == type(module.reference).__name__ == "GPT2LMHeadModel"
    assert any(not torch.equal(p, before[k]) for k, p in module.policy.named_parameters())
    assert not torch.equal(module.reference.transformer.wte.weight, before["transformer.wte.weight"])  # π_ref: the SFT π


def test_a_peft_model_built_outside_aihf_gets_its_base_as_the_reference(sort_data, tmp_path):
    torch.manual_seed(0)
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, [f"llm.policy._target_={HERE}.lora_gpt2_policy",
                                                          "algo.bc_warmstart_steps=0"]))
    assert type(module.reference).__name__ == "AdapterDisabled"
    fit(module, tmp_path)
    trained = {k for k, p in module.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in k for k in trained)


def test_a_reference_of_ones_own_is_the_one_the_dpo_term_uses(sort_data, tmp_path):
    torch.manual_seed(0)
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, [f"llm.reference._target_={HERE}.saved_reference",
                                                          "algo.bc_warmstart_steps=0"]))
    assert module.reference is SAVED["ref"]
    _, metrics = module.implicit_objective(None, module.data["prefs"][:8])
    assert abs(float(metrics["rewards/chosen"])) > 1e-4  # π ≠ π_ref from the start: the loaded reference is used


def test_a_reward_of_ones_own_is_fitted_by_the_rm_preset(sort_data, tmp_path):
    torch.manual_seed(0)
    module = LLMAIHF(llm_cfg("rm", sort_data, tmp_path, [f"llm.reward._target_={HERE}.BigramReward",
                                                         "llm.reward.init_from_policy=false", "llm.reward.lr=0.1",
                                                         "llm.train.policy_steps=30"]))
    assert isinstance(module.reward, BigramReward)
    fit(module, tmp_path)
    assert module.reward.scores.abs().sum() > 0
    assert module.final_metrics["eval/pref_accuracy"] > 0.6  # ascending bigrams: sortedness, learnable
