"""Data order like a real trainer (shuffled epochs without replacement, resumable mid-epoch, split across DDP
ranks as DistributedSampler does), llm.train.epochs, and IPO on per-token log-ratios as TRL computes it."""

import math
from collections import Counter

import pytest
import torch

from aihf import objectives
from aihf.llm.module import LLMAIHF
from aihf.llm.order import EpochOrder
from conftest import fit, llm_cfg


def test_each_epoch_reads_every_row_once():
    order = EpochOrder(10, seed=0, part="prefs")
    drawn = [order.take(4) for _ in range(5)]  # 20 indices: two epochs exactly, batches across the boundary
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each epoch its own shuffle
    assert order.epochs_done == 2.0


def test_order_resumes_mid_epoch():
    full = EpochOrder(7, seed=3, part="demos")
    expected = [full.take(3) for _ in range(6)]
    first = EpochOrder(7, seed=3, part="demos")
    got = [first.take(3) for _ in range(2)]
    second = EpochOrder(7, seed=3, part="demos")
    second.load_state_dict(first.state_dict())
    got += [second.take(3) for _ in range(4)]
    assert got == expected
    with pytest.raises(ValueError, match="covers 7 rows, this run has 8"):
        EpochOrder(8, seed=3, part="demos").load_state_dict(first.state_dict())


def test_ranks_split_what_one_process_reads():
    one = EpochOrder(13, seed=1, part="prefs")
    ranks = [EpochOrder(13, seed=1, part="prefs", rank=r, world=2) for r in range(2)]
    for _ in range(5):
        assert one.take(6) == ranks[0].take(3) + ranks[1].take(3)


def test_parts_and_seeds_have_their_own_orders():
    a, b, c = (EpochOrder(50, 0, "demos"), EpochOrder(50, 0, "prefs"), EpochOrder(50, 1, "demos"))
    assert len({tuple(o.take(50)) for o in (a, b, c)}) == 3


def test_module_reads_the_demonstrations_without_replacement(sort_data, tmp_path, monkeypatch):
    """64 demonstrations, batch 4: 16 SFT steps read each demonstration exactly once (draws with replacement
    would cover about 64 % of them)."""
    module = LLMAIHF(llm_cfg("sft", sort_data, tmp_path, ["algo.bc_warmstart_steps=16", "llm.train.policy_steps=16"]))
    seen = []
    real = module.draw
    monkeypatch.setattr(module, "draw", lambda part, n: seen.append(real(part, n)) or seen[-1])
    fit(module, tmp_path)
    counts = Counter(i for batch in seen for i in batch)
    assert len(module.data["demos"]) == 64 and len(seen) == 32
    assert set(counts.values()) == {2} and len(counts) == 64  # two epochs, every row twice
    assert module.history[-1]["step"] == 32


def test_epochs_set_the_main_stage_length(sort_data, tmp_path):
    cfg = llm_cfg("dpo", sort_data, tmp_path, ["algo.bc_warmstart_steps=2", "llm.train.epochs=0.3"])
    module = LLMAIHF(cfg)
    assert len(module.data["prefs"]) == 64
    assert module.plan() == (2, 0, math.ceil(0.3 * 64 / 4))  # 5 steps of 4 pairs
    fit(module, tmp_path)
    assert module.steps_done == 7
    assert module.orders["prefs"].epochs_done == pytest.approx(20 / 64)


@pytest.mark.parametrize("loss_type", ["ipo", "ipo_sum"])
def test_ipo_uses_per_token_log_ratios(loss_type, sort_data, tmp_path):
    """`ipo` (the default IPO) is (h − 1/(2β))² on per-token mean log-ratios, as TRL's DPOTrainer computes it;
    `ipo_sum` on summed ones."""
    module = LLMAIHF(llm_cfg("ipo", sort_data, tmp_path, [f"algo.dpo_loss_type={loss_type}",
                                                           "algo.bc_warmstart_steps=2"]))
    fit(module, tmp_path)  # the policy moves away from π_ref, so the log-ratios are not zero
    prefs = module.data["prefs"][:8]
    prompts, ch, rj = [p["prompt"] for p in prefs], [p["chosen"] for p in prefs], [p["rejected"] for p in prefs]
    with torch.no_grad():
        (pc, pr), (nc, nr) = module.pair_logps(module.policy, prompts, ch, rj)
        (rc, rr), _ = module.pair_logps(module.reference, prompts, ch, rj)
        loss, _ = module.implicit_objective(None, prefs)
    assert not torch.equal(nc, nr)  # responses of different lengths, where the two forms differ
    if loss_type == "ipo":
        h = (pc - rc) / nc - (pr - rr) / nr
    else:
        h = (pc - rc) - (pr - rr)
    beta = module.cfg.algo.beta
    assert loss.item() == pytest.approx(((h - 1 / (2 * beta)) ** 2).mean().item(), rel=1e-5)
    other = (pc - rc) - (pr - rr) if loss_type == "ipo" else (pc - rc) / nc - (pr - rr) / nr
    assert abs(loss.item() - objectives.dpo_loss(other, torch.zeros_like(other), torch.zeros_like(other),
                                                 torch.zeros_like(other), beta, "ipo").item()) > 1e-4


def test_two_ddp_processes_equal_one_with_the_doubled_batch(sort_data, tmp_path):
    """DPO on 2 gloo processes × 4 pairs ends with the weights of 1 process × 8 pairs: the ranks read disjoint
    halves of the one data order and DDP averages their gradients (a per-pair mean loss, so the average is exact)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    paths = [f"llm.data.{k}={sort_data / (k + '.jsonl')}" for k in ("demos", "prefs", "heldout_demos",
                                                                      "heldout_prefs", "eval_prompts")]
    common = ["domain=llm", "algo=dpo", "algo.bc_warmstart_steps=0", "llm.train.policy_steps=4",
              "llm.train.eval_every=0", "llm.train.torch_threads=1", "llm.policy.hidden_size=32",
              "llm.policy.lr=1e-2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", *paths]
    runs = {"ddp": ["trainer=ddp", "trainer.devices=2", "llm.train.batch_size=4"],
            "one": ["llm.train.batch_size=8"]}
    for name, extra in runs.items():
        proc = subprocess.run([sys.executable, str(root / "run.py"), *common, *extra, f"hydra.run.dir={tmp_path / name}"],
                              capture_output=True, text=True, cwd=root, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
        assert proc.returncode == 0, proc.stderr[-2000:]
    ddp, one = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
                for n in ("ddp", "one"))
    policy = [k for k in one if k.startswith("policy.")]
    assert all(torch.allclose(ddp[k], one[k], atol=1e-5) for k in policy)
    assert any(not torch.equal(one[k], ddp["reference." + k[len("policy."):]]) for k in policy)  # it trained
