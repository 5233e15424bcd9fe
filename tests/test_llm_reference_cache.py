"""llm.train.reference_logps=precomputed: π_ref's log-probs of the pairs computed once when π_ref is frozen train
the same policy as the live reference forward at every step, the reference is not run again in the main stage, the
disk cache (llm.train.reference_cache_dir) is read back only under the same fingerprint, and a run killed in the
main stage and resumed ends bit-identical to the uninterrupted one."""

from __future__ import annotations

import signal

import pytest
import torch

from aihf.llm.module import LLMAIHF
from conftest import fit, llm_cfg
from test_llm_resume import _args, _csv, _history, _run

DPO = ["algo.bc_warmstart_steps=2", "llm.train.policy_steps=4", "llm.policy.lr=1e-2"]


def _trained(sort_data, tmp_path, name, extra, seed=0, count_reference=False):
    torch.manual_seed(seed)
    module = LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / name, [*DPO, *extra]))
    calls = []
    if count_reference:
        real = module.pair_logps

        def counted(model, *args):
            if model is module.fixed_reference:
                calls.append(module.steps_done)
            return real(model, *args)
        module.pair_logps = counted
    fit(module, tmp_path / name)
    return module, calls


def test_precomputed_reference_trains_like_the_live_one_without_running_it(sort_data, tmp_path):
    live, _ = _trained(sort_data, tmp_path, "live", [])
    cached, calls = _trained(sort_data, tmp_path, "cached", ["llm.train.reference_logps=precomputed"],
                             count_reference=True)
    weights = dict(live.policy.named_parameters())
    assert all(torch.allclose(p, weights[k], atol=1e-5) for k, p in cached.policy.named_parameters())
    assert abs(live.final_metrics["eval/pref_accuracy"] - cached.final_metrics["eval/pref_accuracy"]) < 1e-6
    n_train, n_held = len(cached.data["prefs"]), len(cached.data["heldout_prefs"])
    batches = -(-n_train // cached.cfg.llm.train.eval_batch_size) + -(-n_held // cached.cfg.llm.train.eval_batch_size)
    assert calls == [2] * batches  # every pair once, at the first main-stage step (2 SFT steps before it)
    assert cached.ref_table.table["prefs"].shape == (n_train, 2)


def test_the_frozen_copy_is_released_when_nothing_but_the_pairs_reads_it(sort_data, tmp_path):
    """Without the evaluation's sampled KL, π_ref's copy is let go once its table exists, and the run trains the
    same policy; with it (the sort data's evaluation prompts), the copy stays."""
    live, _ = _trained(sort_data, tmp_path, "live", [])
    released, _ = _trained(sort_data, tmp_path, "released", ["llm.train.reference_logps=precomputed",
                                                               "llm.train.eval_prompts=0"])
    kept, _ = _trained(sort_data, tmp_path, "kept", ["llm.train.reference_logps=precomputed"])
    assert released.reference is None and kept.reference is not None and live.reference is not None
    assert not any(k.startswith("reference.") for k in released.state_dict())
    weights = dict(live.policy.named_parameters())
    assert all(torch.allclose(p, weights[k], atol=1e-5) for k, p in released.policy.named_parameters())


def test_the_disk_cache_is_read_back_only_under_the_same_fingerprint(sort_data, tmp_path):
    cache = tmp_path / "cache"
    opts = ["llm.train.reference_logps=precomputed", f"llm.train.reference_cache_dir={cache}",
            "algo.bc_warmstart_steps=0"]
    first, _ = _trained(sort_data, tmp_path, "a", opts)
    files = list(cache.glob("*.pt"))
    assert [f.stem for f in files] == [first.ref_table.key]
    again, calls = _trained(sort_data, tmp_path, "b", opts, count_reference=True)
    assert calls == [] and again.ref_table.key == first.ref_table.key  # read, not computed
    assert all(torch.equal(again.ref_table.table[p], first.ref_table.table[p]) for p in first.ref_table.table)
    other_weights, _ = _trained(sort_data, tmp_path, "c", opts, seed=1)
    fewer_pairs, _ = _trained(sort_data, tmp_path, "d", [*opts, "llm.data.num_prefs=40"])
    keys = {first.ref_table.key, other_weights.ref_table.key, fewer_pairs.ref_table.key}
    assert len(keys) == 3 and {f.stem for f in cache.glob("*.pt")} == keys


@pytest.mark.parametrize("evaluation", ["sampled", "pairs only"])
def test_killed_in_the_main_stage_and_resumed_equals_the_uninterrupted_run(sort_data, tmp_path, evaluation):
    """With the frozen copy kept (the evaluation samples) and released (it does not; the resumed run must release
    it before the weights are loaded, since the checkpoint no longer holds them)."""
    def args(run_dir, *extra):
        if evaluation == "pairs only":
            extra = ("llm.train.eval_prompts=0", *extra)
        # _args' run, as dpo: steps 1-2 SFT, 3-6 DPO, evaluations at 3 and 6; killed after the checkpoint at 4
        base = [a for a in _args(sort_data, run_dir) if not a.startswith(("algo=", "algo.", "llm.train.policy_steps"))]
        return [*base, "algo=dpo", "algo.bc_warmstart_steps=2", "llm.train.policy_steps=4",
                "llm.train.reference_logps=precomputed", *extra]
    full = _run(args(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _run(args(tmp_path / "run"), kill_at=4)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(args(tmp_path / "run", "loop.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    theirs = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    assert any(k.startswith("reference.") for k in ours["state_dict"]) == (evaluation == "sampled")
    assert all(torch.equal(ours["state_dict"][k], v) for k, v in theirs["state_dict"].items())
    assert _history(tmp_path / "run") == _history(tmp_path / "full")
    assert _csv(tmp_path / "run") == _csv(tmp_path / "full")


def test_the_fingerprint_covers_the_model_config_and_a_corrupt_cache_file_is_computed_again(tmp_path):
    """Equal weights under another rotary base compute other log-probs: another key. A cut-short cache file is
    not an error: the table is computed again and the file replaced."""
    import copy

    from transformers import AutoModelForCausalLM, LlamaConfig

    from aihf.llm.reference_cache import ReferenceLogps, fingerprint
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = AutoModelForCausalLM.from_config(config)
    other = copy.deepcopy(model)
    other.config.rope_theta = 100.0
    pairs = {"prefs": [{"prompt": [1, 2], "chosen": [3], "rejected": [4]}]}
    assert fingerprint(model, pairs, {}) != fingerprint(other, pairs, {})
    assert fingerprint(model, pairs, {}) == fingerprint(copy.deepcopy(model), pairs, {})
    calls = []

    def compute(prompts, chosen, rejected):
        calls.append(len(prompts))
        return torch.ones(len(prompts)), torch.zeros(len(prompts))
    first = ReferenceLogps.build(compute, model, pairs, {}, 8, str(tmp_path))
    (tmp_path / f"{first.key}.pt").write_bytes(b"cut short")
    again = ReferenceLogps.build(compute, model, pairs, {}, 8, str(tmp_path))
    assert calls == [1, 1] and torch.equal(again.table["prefs"], first.table["prefs"])
    assert ReferenceLogps.build(compute, model, pairs, {}, 8, str(tmp_path)).key == first.key and calls == [1, 1]
