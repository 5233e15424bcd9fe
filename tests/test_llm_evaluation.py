"""What the LLM evaluation reports beside its accuracies: a length baseline fit the way a learner could fit it, each
held-out pair's outcome for paired comparisons, and KL per sequence and per token with standard errors."""

import json
import shutil

import pytest
import torch
from conftest import llm_cfg

from aihf.llm.evaluation import pair_id
from aihf.llm.module import LLMAIHF


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pair(prompt, short, long, short_wins):
    chosen, rejected = (short, long) if short_wins else (long, short)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@pytest.fixture
def shorter_wins(sort_data, tmp_path):
    """The sort task's files with pairs where the shorter response wins every training pair and 12 of 16 held-out
    ones; held-out responses are 10 and 14 tokens, both longer than a small llm.data.max_length leaves them."""
    data = tmp_path / "data"
    shutil.copytree(sort_data, data)
    train = [_pair(f"sort {i} {i + 1} =", f"{i}", " ".join([str(i)] * (8 + i % 5)), True) for i in range(40)]
    held = [_pair(f"sort {i} 9 {i} =", " ".join([str(i)] * 10), " ".join(["9"] * 14), i < 12) for i in range(16)]
    _write(data / "prefs.jsonl", train)
    _write(data / "heldout_prefs.jsonl", held)
    return data


def test_length_baseline_is_fit_on_training_pairs_on_whole_responses(shorter_wins, tmp_path):
    module = LLMAIHF(llm_cfg("dpo", shorter_wins, tmp_path, ["llm.data.max_length=12",
                                                               "llm.data.max_prompt_length=8"]))
    # truncation leaves every held-out pair's two responses the same length: a baseline read from the token ids
    # the model sees would score 0.5, not the 12 of 16 of the whole responses
    assert all(len(p["chosen"]) == len(p["rejected"]) for p in module.data["heldout_prefs"])
    out = module.preference_metrics()
    assert out["baseline/length_direction"] == -1.0
    assert out["baseline/length_pref_accuracy"] == pytest.approx(12 / 16)
    # "the longer wins", the old fixed rule, would have scored the complement
    gaps = torch.tensor([o["length_gap"] for o in module.pair_outcomes])
    assert (gaps > 0).float().mean().item() == pytest.approx(4 / 16)


def test_each_heldout_pair_outcome_is_kept_with_its_identity(sort_data, tmp_path):
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path))
    out = module.preference_metrics()
    rows = module.text["heldout_prefs"]
    outcomes = module.pair_outcomes
    assert [o["pair"] for o in outcomes] == [pair_id(r) for r in rows]
    assert len({o["pair"] for o in outcomes}) == len(rows)
    margins = torch.tensor([o["margin"] for o in outcomes])
    acc = ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()
    assert acc == pytest.approx(out["eval/pref_accuracy"])
    # before any preference step π = π_ref: every implicit margin is a tie, while π_ref's own log-likelihoods
    # (summed and per token) rank the pairs
    assert out["eval/pref_accuracy"] == 0.5 and (margins == 0).all()
    ref = torch.tensor([o["ref_margin"] for o in outcomes])
    per_token = torch.tensor([o["ref_margin_per_token"] for o in outcomes])
    assert out["eval/ref_loglik_pref_accuracy"] == pytest.approx(((ref > 0).float() + 0.5 * (ref == 0).float()).mean())
    assert out["eval/ref_loglik_per_token_pref_accuracy"] == pytest.approx(
        ((per_token > 0).float() + 0.5 * (per_token == 0).float()).mean())


def test_kl_is_reported_per_sequence_and_per_token_with_standard_errors(sort_data, tmp_path, monkeypatch):
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path, ["llm.train.eval_prompts=4", "llm.train.eval_samples=2",
                                                            "llm.train.eval_batch_size=4"]))
    kl = torch.tensor([0.5, 1.0, 2.0, 0.0, 3.0, 1.5, 0.25, 0.75])
    tokens = torch.tensor([1, 2, 4, 1, 3, 3, 1, 5])

    def fixed_logps(model, prompts, responses, k):  # π's rows carry the KL, π_ref's are zero
        n = len(prompts)
        return (kl[:n] if model is module.policy else torch.zeros(n)), tokens[:n]
    monkeypatch.setattr(module, "repeated_logps", fixed_logps)
    out = module.evaluate()
    assert out["eval/kl_samples"] == 8
    assert out["eval/kl"] == pytest.approx(kl.mean().item())
    assert out["eval/kl_se"] == pytest.approx(kl.std().item() / 8 ** 0.5)
    per_token = kl / tokens
    assert out["eval/kl_per_token"] == pytest.approx(per_token.mean().item())
    assert out["eval/kl_per_token_se"] == pytest.approx(per_token.std().item() / 8 ** 0.5)
