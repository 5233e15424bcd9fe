"""DPO training throughput and peak memory: aihf's `dpo` preset against TRL's DPOTrainer, side by side.

Same tiny Llama (built from one config and saved once, so both start from identical weights), same tokenizer,
same preference pairs (the built-in sort task), batch size, β, learning rate, optimiser (AdamW), gradient clipping
and precision (fp32). Each side runs in its own process so that peak memory is its own; the timed part is the
training loop only (both tokenise their data before it). Prints pairs/s, tokens/s and peak memory, and the ratios.

    python bench/dpo_throughput.py --steps 60 --batch-size 16 --hidden 256 --layers 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def peak_memory_mb() -> float:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def pairs(n: int) -> list[dict]:
    rows = [json.loads(line) for line in open(ROOT / "data/llm/sort/prefs.jsonl")]
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows[:n]]


def prepare(model_dir: Path, args) -> None:
    """One tiny model and tokenizer, saved, so both sides load the same weights."""
    import torch
    from omegaconf import OmegaConf
    from aihf.llm.models import build_policy, build_tokenizer
    texts = [p["prompt"] + " " + p[k] for p in pairs(args.pairs) for k in ("chosen", "rejected")]
    tok = build_tokenizer(OmegaConf.create({"kind": "wordlevel", "vocab_size": 8000}), texts)
    torch.manual_seed(0)
    model = build_policy(OmegaConf.create({"name_or_path": None, "arch": "llama", "hidden_size": args.hidden,
                                           "num_layers": args.layers, "num_heads": 4, "max_positions": 64,
                                           "gguf_file": None}), tok)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def run_aihf(model_dir: Path, args) -> dict:
    import pytorch_lightning as pl
    import torch
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_cfg
    from aihf.llm.module import LLMAIHF
    torch.set_num_threads(args.threads)
    data = Path(tempfile.mkdtemp()) / "prefs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs(args.pairs)))
    cfg = compose_cfg(["domain=llm", "algo=dpo", f"llm.data.prefs={data}", "llm.data.demos=null",
                       "llm.data.heldout_demos=null", "llm.data.heldout_prefs=null", "llm.data.eval_prompts=null",
                       "llm.tokenizer.kind=pretrained", f"llm.tokenizer.name_or_path={model_dir}",
                       f"llm.policy.name_or_path={model_dir}", "algo.bc_warmstart_steps=0",
                       f"llm.train.policy_steps={args.steps}", f"llm.train.batch_size={args.batch_size}",
                       f"llm.policy.lr={args.lr}", "llm.train.eval_every=0", f"llm.train.torch_threads={args.threads}",
                       "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false"],
                      Path(tempfile.mkdtemp()))
    module = LLMAIHF(cfg)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    tokens = sum(2 * len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) for p in module.data["prefs"])
    tokens_per_pair = tokens / len(module.data["prefs"])
    t0 = time.perf_counter()
    trainer.fit(module)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "pairs": args.steps * args.batch_size, "tokens_per_pair": tokens_per_pair}


def run_trl(model_dir: Path, args) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = tempfile.mkdtemp()
    config = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                       learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"], max_length=32, report_to=[],
                       logging_steps=10**6, save_strategy="no", use_cpu=not torch.cuda.is_available(),
                       dataloader_num_workers=0, seed=0, disable_tqdm=True, bf16=False, fp16=False)
    trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=datasets.Dataset.from_list(
        pairs(args.pairs)), processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "pairs": args.steps * args.batch_size}


def child(which: str, model_dir: Path, args) -> None:
    result = (run_aihf if which == "aihf" else run_trl)(model_dir, args)
    result["peak_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["aihf", "trl"])
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.model_dir, args)

    import torch
    import transformers
    import trl
    model_dir = Path(tempfile.mkdtemp()) / "tiny-llama"
    prepare(model_dir, args)
    results = {}
    for which in ("aihf", "trl"):
        cmd = [sys.executable, __file__, "--child", which, "--model-dir", str(model_dir)] + [
            a for a in sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
        results[which] = json.loads(line[-1][7:])
    tpp = results["aihf"]["tokens_per_pair"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"DPO, tiny Llama {args.layers}x{args.hidden}, batch {args.batch_size}, {args.steps} steps, "
          f"{tpp:.1f} tokens/pair (prompt counted for chosen and rejected), {device}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, trl {trl.__version__}")
    print("| | pairs/s | tokens/s | peak memory (MB) | seconds |\n|---|---|---|---|---|")
    for which, r in results.items():
        r["pairs_per_s"] = r["pairs"] / r["seconds"]
        r["tokens_per_s"] = r["pairs_per_s"] * tpp
        print(f"| {which} | {r['pairs_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |")
    a, t = results["aihf"], results["trl"]
    print(f"| aihf / TRL | {a['pairs_per_s'] / t['pairs_per_s']:.2f} | {a['tokens_per_s'] / t['tokens_per_s']:.2f} "
          f"| {a['peak_mb'] / t['peak_mb']:.2f} | |")


if __name__ == "__main__":
    main()
