"""The language-model domain: every preset runs and trains all its parameters; the reductions of docs/design.md §2
hold on the same batch; sequence log-probabilities mask prompts and padding; a resumed run equals an
uninterrupted one."""

import math

import pytest
import pytorch_lightning as pl
import torch

from aihf import objectives
from aihf.llm.module import LLMAIHF
from aihf.llm.sequences import response_logps
from conftest import fit, llm_cfg

PRESETS = ["sft", "rm", "dpo", "ipo", "rpo", "spin", "rlhf", "aihf", "aihf_dpo", "aihf_selfplay", "irl", "bc"]


def build(algo, data, tmp_path, extra=(), seed=0):
    pl.seed_everything(seed, verbose=False)
    return LLMAIHF(llm_cfg(algo, data, tmp_path, [f"seed={seed}", "algo.bc_warmstart_steps=2",
                                                    "algo.reward_pretrain_steps=2", *extra]))


@pytest.mark.parametrize("algo", PRESETS)
def test_preset_trains_every_parameter(algo, sort_data, tmp_path):
    module = build(algo, sort_data, tmp_path)
    trained = {"policy": module.policy} if module.trains_policy else {}
    if module.reward is not None:
        trained["reward"] = module.reward
    before = {f"{n}.{k}": v.detach().clone() for n, m in trained.items() for k, v in m.named_parameters()}
    fit(module, tmp_path)
    assert module.steps_done == sum(module.plan())
    unchanged = [k for n, m in trained.items() for k, v in m.named_parameters()
                 if v.requires_grad and torch.equal(v, before[f"{n}.{k}"])]
    assert not unchanged, f"{algo}: parameters did not change: {unchanged}"
    m = module.final_metrics
    assert m["algo"] == module.cfg.algo.name and (tmp_path / "metrics.json").is_file()
    assert 0.0 <= m["eval/pref_accuracy"] <= 1.0
    if module.trains_policy:
        assert {"eval/gold_greedy", "eval/gold_sampled", "eval/kl", "eval/demo_logp_per_token"} <= set(m)
        assert not any(p.requires_grad for p in module.reference.parameters())


def _twins(algo_a, algo_b, data, tmp_path, extra_a=(), extra_b=()):
    a = build(algo_a, data, tmp_path / "a", extra_a)
    b = build(algo_b, data, tmp_path / "b", extra_b)
    b.policy.load_state_dict(a.policy.state_dict())
    for m in (a, b):
        with torch.no_grad():  # a reference that differs from π, so log π/π_ref is not trivially 0
            for p in m.reference.parameters():
                p.add_(0.01 * torch.sin(torch.arange(p.numel(), dtype=p.dtype)).view_as(p))
    return a, b


def _loss_and_grads(module, *batch):
    module.policy.zero_grad()
    loss, _ = module.implicit_objective(*batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.policy.parameters()]


@pytest.mark.parametrize("weighting", ["mean", "sum"])
def test_aihf_dpo_without_demonstrations_is_dpo(weighting, sort_data, tmp_path):
    a, b = _twins("aihf_dpo", "dpo", sort_data, tmp_path, ["algo.demo_weight=0", f"algo.weighting={weighting}"],
                  [f"algo.weighting={weighting}"])
    demos, prefs = a.data["demos"][:6], a.data["prefs"][:6]
    loss_a, grads_a = _loss_and_grads(a, demos, prefs)
    loss_b, grads_b = _loss_and_grads(b, demos, prefs)
    assert abs(loss_a - loss_b) < 1e-6 and loss_a > 0
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=0)


def test_aihf_selfplay_without_preferences_is_spin(sort_data, tmp_path):
    a, b = _twins("aihf_selfplay", "spin", sort_data, tmp_path, ["algo.pref_weight=0"])
    demos, prefs = a.data["demos"][:6], a.data["prefs"][:6]
    torch.manual_seed(0)
    selfplay = a.sample(a.reference, [d["prompt"] for d in demos])
    loss_a, grads_a = _loss_and_grads(a, demos, prefs, selfplay)
    loss_b, grads_b = _loss_and_grads(b, demos, prefs, selfplay)
    assert abs(loss_a - loss_b) < 1e-6 and loss_a > 0
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=0)


def test_aihf_dpo_is_nll_plus_dpo(sort_data, tmp_path):
    """−λ_D·E_D log π(y^E|x) (per token) + λ_P·DPO, with the two weights applied as configured."""
    module = build("aihf_dpo", sort_data, tmp_path, ["algo.demo_weight=0.3", "algo.pref_weight=2.0"])
    demos, prefs = module.data["demos"][:5], module.data["prefs"][:5]
    loss, metrics = module.implicit_objective(demos, prefs)
    lp, n = module.logps(module.policy, [d["prompt"] for d in demos], [d["response"] for d in demos])
    torch.testing.assert_close(loss, 0.3 * (-lp.sum() / n.sum()) + 2.0 * metrics["loss/pref"])


def test_dpo_loss_matches_hand_computation():
    # h = (−1 + 1.5) − (−2 + 1.5) = 1; β = 0.5: −log σ(0.5) = log(1 + e^−0.5)
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -2.0, -1.5, -1.5))
    assert abs(objectives.dpo_loss(pc, pr, rc, rr, beta=0.5).item() - math.log1p(math.exp(-0.5))) < 1e-6
    # IPO: (h − 1/(2β))² = (1 − 1)² = 0, and with β = 0.25: (1 − 2)² = 1
    assert objectives.dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo").item() == pytest.approx(0.0, abs=1e-7)
    assert objectives.dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="ipo").item() == pytest.approx(1.0)


def test_module_dpo_loss_uses_sequence_logps(sort_data, tmp_path):
    a, _ = _twins("dpo", "dpo", sort_data, tmp_path)
    prefs = a.data["prefs"][:4]
    loss, _ = a.implicit_objective(None, prefs)
    by_hand = []
    for p in prefs:
        lp = lambda model, y: response_logps(model, [p["prompt"]], [y], a.tokenizer.pad_token_id)[0][0]
        h = (lp(a.policy, p["chosen"]) - lp(a.reference, p["chosen"])) - \
            (lp(a.policy, p["rejected"]) - lp(a.reference, p["rejected"]))
        by_hand.append(-torch.nn.functional.logsigmoid(0.1 * h))
    torch.testing.assert_close(loss, torch.stack(by_hand).mean(), atol=1e-6, rtol=1e-5)


def test_response_logps_mask_prompt_and_padding(sort_data, tmp_path):
    module = build("sft", sort_data, tmp_path)
    model, pad = module.policy, module.tokenizer.pad_token_id
    demos = module.data["demos"][:4]
    batched, counts = response_logps(model, [d["prompt"] for d in demos], [d["response"] for d in demos], pad)
    for i, d in enumerate(demos):
        ids = torch.tensor([d["prompt"] + d["response"]])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        tokens = ids[0, 1:]
        start = len(d["prompt"]) - 1  # the first response token is predicted from the last prompt position
        manual = logp[torch.arange(start, len(tokens)), tokens[start:]].sum()
        torch.testing.assert_close(batched[i], manual, atol=1e-5, rtol=1e-5)
        assert counts[i] == len(d["response"])


def test_rloo_advantage_is_leave_one_out(sort_data, tmp_path, monkeypatch):
    """The policy-gradient loss is −mean_i (R_i − mean_{j≠i} R_j)·log π(y_i|x), with R = r_φ − β·log π/π_ref."""
    module = build("aihf", sort_data, tmp_path, ["llm.train.rl_prompts=1", "llm.train.rl_samples=3"])
    module.freeze_reference()
    responses = [d["response"] for d in module.data["demos"][:3]]
    seen, captured = {}, {}

    def fake_sample(model, prompts, greedy=False):
        seen["prompts"] = prompts
        return responses
    monkeypatch.setattr(module, "sample", fake_sample)
    monkeypatch.setattr(module, "score", lambda prompts, ys: torch.tensor([1.0, 2.0, 6.0]))
    monkeypatch.setattr(module, "_step", lambda index, loss, clip: captured.setdefault("loss", loss))
    module.rl_step()
    # π = π_ref right after the freeze, so R = r and the advantages are 1 − 4, 2 − 3.5, 6 − 1.5.
    adv = torch.tensor([-3.0, -1.5, 4.5])
    logp, _ = module.logps(module.policy, seen["prompts"], responses)
    torch.testing.assert_close(captured["loss"], -(adv * logp).mean())

    # With π ≠ π_ref the KL penalty enters R: R_i = r_i − β(log π − log π_ref)(y_i).
    with torch.no_grad():
        for p in module.policy.parameters():
            p.mul_(1.05)
    captured.clear()
    module.rl_step()
    logp, _ = module.logps(module.policy, seen["prompts"], responses)
    ref, _ = module.logps(module.reference, seen["prompts"], responses)
    total = torch.tensor([1.0, 2.0, 6.0]) - 0.1 * (logp.detach() - ref)
    adv = total - (total.sum() - total) / 2
    torch.testing.assert_close(captured["loss"], -(adv * logp).mean())


def test_resumed_run_equals_uninterrupted_run(sort_data, tmp_path):
    from aihf.app import train
    extra = ["algo.bc_warmstart_steps=2", "algo.reward_pretrain_steps=2", "trainer.enable_checkpointing=true"]
    cfg = lambda run, steps, more=(): llm_cfg("aihf", sort_data, tmp_path / run,
                                              [*extra, f"llm.train.policy_steps={steps}", *more])
    train(cfg("full", 6))
    train(cfg("first", 3))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    second = train(cfg("second", 6, [f"loop.init_from={ckpt}"]))
    assert second["steps"] == 2 + 2 + 6 and second["policy_updates"] == 6
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    resumed = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_sft_learns_the_sort_task(tmp_path):
    """From random weights (gold below 0.2) to most digits in place after 300 SFT steps on 1000 demonstrations."""
    from aihf.llm.sort_task import build
    data = tmp_path / "data"
    build(data, seed=2, num_demos=1000, num_prefs=8, num_heldout_prefs=8, num_heldout_demos=8, num_eval_prompts=64)
    module = LLMAIHF(llm_cfg("sft", data, tmp_path, [
        "algo.bc_warmstart_steps=300", "llm.train.policy_steps=0", "llm.policy.hidden_size=64",
        "llm.policy.warmstart_lr=1e-3", "llm.train.batch_size=32"]))
    before = module.evaluate()["eval/gold_greedy"]
    fit(module, tmp_path)
    after = module.final_metrics["eval/gold_greedy"]
    assert before < 0.2 and after > 0.5, (before, after)


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_llm_metrics_and_sample_table_reach_the_loggers(logger, sort_data, tmp_path):
    from aihf.app import train
    result = train(llm_cfg("sft", sort_data, tmp_path, [f"logger={logger}", "algo.bc_warmstart_steps=2",
                                                       "llm.train.policy_steps=2", "llm.train.sample_table_rows=3"]))
    sub = "tensorboard" if logger == "tensorboard" else "wandb"
    assert any((tmp_path / sub).rglob("*")), f"{logger} wrote nothing under {tmp_path / sub}"
    assert "eval/gold_sampled" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert len(result["samples"]) == 3 and (tmp_path / "samples.jsonl").is_file()


def test_ddp_on_two_cpu_processes_takes_every_step(sort_data, tmp_path):
    """Two gloo processes: each takes the full step budget (no DistributedSampler split), with an explicit reward
    left unused by the policy steps (find_unused_parameters)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    paths = [f"llm.data.{k}={sort_data / (k + '.jsonl')}" for k in ("demos", "prefs", "heldout_demos",
                                                                      "heldout_prefs", "eval_prompts")]
    proc = subprocess.run([sys.executable, str(root / "run.py"), "domain=llm", "algo=aihf", "trainer=ddp",
                           "trainer.accelerator=cpu", "trainer.devices=2", "algo.bc_warmstart_steps=3",
                           "algo.reward_pretrain_steps=2", "llm.train.policy_steps=3", "llm.train.eval_every=0",
                           "llm.train.torch_threads=1", "llm.policy.hidden_size=32", "llm.train.batch_size=4",
                           "llm.train.rl_prompts=2", "llm.train.rl_samples=2", "trainer.enable_progress_bar=false",
                           "trainer.enable_checkpointing=false", f"hydra.run.dir={tmp_path}", *paths],
                          capture_output=True, text=True, cwd=root, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["sft_updates"], m["policy_updates"], m["steps"]) == (3, 3, 3 + 2 + 3)
    assert m["reward_updates"] == 2 + 3  # pre-fit, then one per policy step (algo.reward_every=1)
