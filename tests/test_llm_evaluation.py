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


def test_an_explicit_reward_is_shown_beside_pi_refs_own_ranking(sort_data, tmp_path):
    """rlhf's held-out accuracy is its reward model's; π_ref's zero-shot ranking of the same pairs, by summed
    log-probs, is reported beside it as for the implicit presets."""
    module = LLMAIHF(llm_cfg("rlhf", sort_data, tmp_path))
    out = module.preference_metrics()
    rows = module.data["heldout_prefs"]
    with torch.no_grad():
        (rc, rr), _ = module.pair_logps(module.reference, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
                                        [r["rejected"] for r in rows])
    ref = rc - rr
    assert out["eval/ref_loglik_pref_accuracy"] == pytest.approx(((ref > 0).float() + 0.5 * (ref == 0).float()).mean())
    assert [o["ref_margin"] for o in module.pair_outcomes] == pytest.approx(ref.tolist(), abs=1e-5)
    margins = torch.tensor([o["margin"] for o in module.pair_outcomes])
    assert not torch.allclose(margins, ref)  # the accuracy itself stays the reward model's


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


def test_reevaluation_repeats_a_finished_runs_evaluation_and_takes_only_evaluation_settings(sort_data, tmp_path):
    """A run made by run.py, evaluated again from its last checkpoint by `aihf.llm.reevaluate`: with no override
    the same numbers as the run's own final evaluation (the evaluation seed is the run's), every held-out pair's
    outcome, the run's training record kept; more KL samples when asked; a training setting refused."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from aihf.errors import ConfigError
    from aihf.llm.reevaluate import reevaluate
    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    paths = [f"llm.data.{k}={sort_data / (k + '.jsonl')}" for k in ("demos", "prefs", "heldout_demos",
                                                                      "heldout_prefs", "eval_prompts")]
    proc = subprocess.run([sys.executable, str(root / "run.py"), "domain=llm", "algo=dpo", *paths,
                           "algo.bc_warmstart_steps=2", "llm.train.policy_steps=3", "llm.train.eval_every=0",
                           "llm.train.batch_size=4", "llm.train.eval_prompts=4", "llm.train.eval_samples=2",
                           "llm.train.max_new_tokens=6", "llm.policy.hidden_size=32", "llm.train.torch_threads=1",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"],
                          capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = json.loads((run / "metrics.json").read_text())
    again = reevaluate(run, tmp_path / "again", [])
    for key in ("eval/pref_accuracy", "eval/kl", "eval/kl_se", "eval/ref_loglik_pref_accuracy",
                "baseline/length_pref_accuracy", "eval/demo_logp_per_token"):
        assert again[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-7), key
    assert [o["pair"] for o in again["heldout_pairs"]] == [o["pair"] for o in trained["heldout_pairs"]]
    assert (again["algo"], again["steps"], again["git_commit"]) == ("dpo", 5, trained["git_commit"])
    # where it trained and where it was measured again (the same commit on another CPU gives other numbers)
    import torch
    from aihf.provenance import machine
    assert again["platform"] == trained["platform"] and trained["platform"]["torch"] == torch.__version__
    assert again["reevaluation"]["platform"]["machine"] == machine() and "transformers" in trained["platform"]
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["eval/kl"] == again["eval/kl"]
    more = reevaluate(run, tmp_path / "more", ["llm.train.eval_samples=3"])
    assert more["eval/kl_samples"] == 12 and trained["eval/kl_samples"] == 8
    with pytest.raises(ConfigError, match="'llm.policy.lr=1.0' is not an evaluation setting"):
        reevaluate(run, tmp_path / "lr", ["llm.policy.lr=1.0"])
    with pytest.raises(ConfigError, match="already exists"):
        reevaluate(run, tmp_path / "again", [])


def test_k_fold_splits_hold_every_pair_out_exactly_once_by_prompt():
    from aihf.llm.data_mix import fold_by_prompt
    pairs = [{"prompt": f"p{i % 37}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(200)]
    held = [fold_by_prompt(pairs, 5, k, seed=3) for k in range(5)]
    ids = [sorted(p["chosen"] for p in h) for h, _ in held]
    assert sorted(sum(ids, [])) == sorted(p["chosen"] for p in pairs)  # every pair held out exactly once
    for h, train in held:
        assert not {p["prompt"] for p in h} & {p["prompt"] for p in train}  # a prompt's pairs stay together
        assert len(h) + len(train) == 200
    sizes = [len(h) for h, _ in held]
    assert max(sizes) - min(sizes) <= 6  # balanced to within one prompt's pairs (5 or 6 here)
    assert held[0][0] != fold_by_prompt(pairs, 5, 0, seed=4)[0]  # the permutation is the split seed's


def test_without_a_gold_reward_only_the_sample_tables_prompts_are_greedily_decoded(sort_data, tmp_path, monkeypatch):
    """Greedy responses serve the gold reward and the samples table; on real data (no gold) decoding all of them
    would only cost time. The sampled responses, hence the KL, are the same either way."""
    extra = ["llm.train.eval_prompts=8", "llm.train.eval_samples=2", "llm.train.eval_batch_size=3",
             "llm.train.sample_table_rows=4"]
    results = {}
    for gold in ("sort", "null"):
        module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / gold, [*extra, f"llm.data.gold={gold}"]))
        decoded, real = [], module.sample

        def counting(model, prompts, greedy=False, real=real, decoded=decoded):
            decoded.extend(prompts if greedy else [])
            return real(model, prompts, greedy)
        monkeypatch.setattr(module, "sample", counting)
        torch.manual_seed(0)
        out = module.evaluate()
        results[gold] = (len(decoded), out, module.samples)
    assert results["sort"][0] == 8 and results["null"][0] == 4
    assert results["null"][1]["eval/kl"] == results["sort"][1]["eval/kl"]
    assert len(results["null"][2]) == 4
    assert [r["greedy"] for r in results["null"][2]] == [r["greedy"] for r in results["sort"][2]]


def test_reevaluating_a_run_older_than_a_changed_default_uses_the_value_it_ran_with(tmp_path):
    from aihf.recompose import predating
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\nllm:\n  data:\n    num_prefs: 100\n")
    assert predating(tmp_path) == ["llm.data.subset=first"]
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\nllm:\n  data:\n    subset: random\n")
    assert predating(tmp_path) == []
