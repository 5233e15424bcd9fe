"""Prompt sharing on long prompts: aihf's DPO step (policy forward and backward, live π_ref forward, fused AdamW)
on HH harmless-base pairs with SmolLM2-135M (experiment=hh_dpo: batch 4), one row per response against packed rows.
Needs the prepared models and ../shared/data/hh-rlhf (docs/llm.md). aihf only: TRL has no counterpart on a CPU.

    python bench/hh_packing.py false; python bench/hh_packing.py true
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from dpo_throughput import compose_cfg  # noqa: E402

STEPS, WARMUP, BATCH = 8, 2, 4


def tokens(pairs: list[dict]) -> int:
    return sum(2 * len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) for p in pairs)


def main(share: str) -> None:
    from aihf.llm.module import LLMAIHF
    torch.set_num_threads(2)
    cfg = compose_cfg(["experiment=hh_dpo", f"llm.train.share_prompt={share}", "llm.train.torch_threads=2",
                       "seed=0"], Path(tempfile.mkdtemp()))
    module = LLMAIHF(cfg)
    module.policy.train()
    opt = torch.optim.AdamW([p for p in module.policy.parameters() if p.requires_grad], lr=1e-5, fused=True)
    pairs, times = module.data["prefs"][:STEPS * BATCH], []
    for i in range(STEPS):
        t = time.perf_counter()
        loss, _ = module.implicit_objective(None, pairs[i * BATCH:(i + 1) * BATCH])
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    prompt_share = 2 * sum(len(p["prompt"]) for p in pairs) / tokens(pairs)
    peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
    print(f"share_prompt={share}: {sum(times[WARMUP:]) / (STEPS - WARMUP):.2f} s/step, "
          f"{tokens(pairs) / len(pairs):.1f} tokens/pair, prompts {prompt_share:.0%} of them, peak {peak} MB")


if __name__ == "__main__":
    main(sys.argv[1])
