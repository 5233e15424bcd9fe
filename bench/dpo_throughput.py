"""DPO training throughput and peak memory: aihf's `dpo` preset against TRL's DPOTrainer, side by side.

Truly the same settings on both sides, checked rather than assumed:
- the same model weights (a tiny Llama built once and saved, or a prepared folder such as
  models/smollm2-135m-instruct) and the same tokenizer;
- the same tokens: both sides tokenise every pair, and the script compares the two sides' prompt, chosen and
  rejected ids pair by pair (and prints each side's own token count); a mismatch stops it;
- the same data order: the pairs are shuffled once with a fixed seed and both sides read them in that order
  (TRL `train_sampling_strategy="sequential"`, aihf's epoch order set to the identity);
- the same activation checkpointing (TRL turns it on by default): `--checkpointing off`, `on` or `both`;
- batch size, β, learning rate (constant), AdamW without weight decay, gradient clipping 1.0, precision
  (`--precision fp32|bf16`: TRL's `bf16=True`, aihf's `trainer.precision=bf16-mixed`), LoRA (`--lora R`: TRL's
  `peft_config` with the adapter-disabled model as reference, aihf's `llm.policy.lora_r`), π_ref's log-probs
  (`--reference live`: a reference forward every step on both sides, TRL `precompute_ref_log_probs=False`;
  `precomputed`: once for all pairs before the timed loop, TRL `precompute_ref_log_probs=True`, aihf
  `llm.train.reference_logps=precomputed`; both in batches of 64).
- the same optimiser: fused AdamW on both sides (TRL's default `adamw_torch_fused`, aihf's).
aihf's own option without a TRL counterpart, `--share-prompt on|off` (`llm.train.share_prompt`, aihf's default on:
chosen and rejected packed behind one copy of their prompt), is named in the table; `off` is TRL's computation,
one row per response (TRL's `padding_free` needs flash-attention, so it is not an option on a CPU).
Each side runs in its own process so that its memory is its own. Both sides run `--warmup` steps first (which
also page in TRL's memory-mapped weights); steps warmup+1 … steps are timed, through a callback on each side at
the same step boundaries, and the memory is taken over those steps: "loop peak" is the peak resident set since the
timed steps began (the CPU's VmHWM, reset through /proc/self/clear_refs; `torch.cuda.max_memory_allocated` after
a reset on a GPU), "training" is that peak minus what was resident when they began (the two sides import
different libraries; aihf's include Hydra and Lightning). "set-up s" is everything before the loop on each side:
loading the models, tokenising, building the trainer or module and, with `--reference precomputed`, computing
π_ref's log-probs of every pair (TRL does it in `DPOTrainer.__init__`, and then keeps no reference model; aihf
releases its frozen copy too, since nothing in this run samples). `--repeats N` runs each side N times,
alternating, and reports the run of median speed (all runs' pairs/s are printed). TRL 1.16's fused LM head also computes entropy, mean
logits and top-1 accuracy at every step, and without Triton (on a CPU) it projects every position, prompt and
padding included, where aihf's fused head projects only response positions; that is each side's design, not a
setting, and part of any difference.

    python bench/dpo_throughput.py --model tiny --hidden 256 --layers 4 --batch-size 16 --steps 60 --threads 1
    python bench/dpo_throughput.py --model models/smollm2-135m-instruct --batch-size 8 --steps 20 --max-length 64
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
BETA = 0.1


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Clock:
    """Times steps [warmup, steps) of either side's loop and the memory over them: at its start the peak is reset
    (the CPU's VmHWM through /proc/self/clear_refs, CUDA's peak statistics), so set-up spikes are not counted, and
    by then the warm-up steps have paged in every weight on both sides (TRL's are memory-mapped until used)."""

    def __init__(self, device: str, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.t0 = self.t1 = None

    def _sync(self):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()

    def start(self):
        import torch
        self._sync()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2**20
        else:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets the peak resident set (VmHWM) to the current one
            self.before = _status_mb("VmRSS")
        self.t0 = time.perf_counter()

    def stop(self):
        import torch
        self._sync()
        self.t1 = time.perf_counter()
        self.peak = (torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else _status_mb("VmHWM"))

    def result(self) -> dict:
        return {"seconds": self.t1 - self.t0, "timed_steps": self.steps - self.warmup, "before_mb": self.before,
                "peak_mb": self.peak}


def pairs(n: int) -> list[dict]:
    """Sort-task pairs in a fixed shuffled order. Responses start with a space: TRL tokenises prompt + response as
    one string, and the sort prompt ends with "=" (without the space "=1" is one unknown word). Each side appends
    its own eos token."""
    rows = [json.loads(line) for line in open(ROOT / "data/llm/sort/prefs.jsonl")]
    random.Random(0).shuffle(rows)  # then cut: any --pairs trains on the same first pairs
    rows = rows[:n]
    return [{"prompt": r["prompt"], "chosen": " " + r["chosen"], "rejected": " " + r["rejected"]} for r in rows]


def prepare_tiny(model_dir: Path, args) -> None:
    import torch
    from omegaconf import OmegaConf
    from aihf.llm.models import build_policy, build_tokenizer
    rows = [json.loads(line) for line in open(ROOT / "data/llm/sort/prefs.jsonl")]
    texts = [r["prompt"] + " " + r[k] for r in rows for k in ("chosen", "rejected")]
    tok = build_tokenizer(OmegaConf.create({"kind": "wordlevel", "vocab_size": 8000}), texts)
    torch.manual_seed(0)
    model = build_policy(OmegaConf.create({
        "name_or_path": None, "arch": "llama", "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": 4,
        "max_positions": max(64, args.max_length), "gguf_file": None, "gradient_checkpointing": False,
        "lora_r": 0}), tok)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def compose_cfg(overrides: list[str], run_dir: Path):
    """The run's config as run.py composes it (Hydra's compose API; not the tests' helper, which imports pytest and
    the MuJoCo domain into the measured process)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from aihf.config import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


def run_aihf(model_dir: Path, args, checkpointing: bool) -> dict:
    import pytorch_lightning as pl
    import torch
    from aihf.llm import order
    from aihf.llm.module import LLMAIHF
    torch.set_num_threads(args.threads)
    order.EpochOrder.permutation = lambda self, epoch: list(range(self.n))  # the shared pre-shuffled order
    data = Path(tempfile.mkdtemp()) / "prefs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs(args.pairs)))
    cfg = compose_cfg(["domain=llm", "algo=dpo", f"llm.data.prefs={data}", "llm.data.demos=null",
                       "llm.data.heldout_demos=null", "llm.data.heldout_prefs=null", "llm.data.eval_prompts=null",
                       f"llm.data.num_prefs={args.pairs}", f"llm.data.max_length={args.max_length}",
                       f"llm.data.max_prompt_length={args.max_length // 2}", "llm.data.prompt_truncation=left",
                       "llm.tokenizer.kind=pretrained", f"llm.tokenizer.name_or_path={model_dir}",
                       f"llm.policy.name_or_path={model_dir}", "algo.bc_warmstart_steps=0", f"algo.beta={BETA}",
                       f"llm.train.policy_steps={args.steps}", f"llm.train.batch_size={args.batch_size}",
                       f"llm.policy.lr={args.lr}", "llm.policy.grad_clip=1.0", "llm.policy.weight_decay=0",
                       f"llm.policy.gradient_checkpointing={str(checkpointing).lower()}",
                       f"llm.policy.lora_r={args.lora}", f"llm.policy.lora_alpha={2 * max(args.lora, 1)}",
                       "llm.train.eval_every=0", f"llm.train.torch_threads={args.threads}",
                       f"llm.train.share_prompt={str(args.share_prompt == 'on').lower()}",
                       f"llm.train.reference_logps={args.reference}", "llm.train.eval_batch_size=64",
                       "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false"],
                      Path(tempfile.mkdtemp()))
    clock = Clock(args.device, args.warmup, args.steps)

    class Timed(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if module.steps_done == args.warmup:
                clock.start()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if module.steps_done == args.steps:
                clock.stop()

    t_setup = time.perf_counter()  # loading, tokenising, the reference copy (and its log-probs) on both sides
    module = LLMAIHF(cfg)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator=args.device, devices=1, callbacks=[Timed()],
                         precision="bf16-mixed" if args.precision == "bf16" else "32-true")
    if args.reference == "precomputed":  # before the loop, as TRL precomputes in DPOTrainer.__init__
        module.to("cuda" if args.device == "cuda" else "cpu")
        module.reference_frozen = True  # (no SFT stage: π_ref is the loaded model)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            module.reference_table()
    setup = time.perf_counter() - t_setup
    trainer.fit(module)
    used = module.data["prefs"][args.warmup * args.batch_size:args.steps * args.batch_size]
    return {**clock.result(), "pairs": len(used), "tokens": _tokens(used), "setup_s": setup,
            "ids": [[p["prompt"], p["chosen"], p["rejected"]] for p in module.data["prefs"][:args.compare]]}


def _tokens(rows: list[dict]) -> int:
    """Tokens through the policy per pair, summed: prompt + chosen and prompt + rejected."""
    return sum(2 * len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) for p in rows)


def run_trl(model_dir: Path, args, checkpointing: bool) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from transformers import TrainerCallback
    torch.set_num_threads(args.threads)
    t_setup = time.perf_counter()  # loading, tokenising, (precomputing) as on the aihf side
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config, ref = None, None
    if args.lora:
        from peft import LoraConfig
        peft_config = LoraConfig(r=args.lora, lora_alpha=2 * args.lora, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    elif args.reference == "live":  # precomputing, TRL keeps no reference model (dpo_trainer.py, is_peft_model or ...)
        ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                       weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"],
                       max_length=args.max_length, report_to=[], logging_steps=10**6, save_strategy="no",
                       use_cpu=args.device == "cpu", dataloader_num_workers=0, seed=0, disable_tqdm=True,
                       bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=checkpointing,
                       precompute_ref_log_probs=args.reference == "precomputed", precompute_ref_batch_size=64,
                       train_sampling_strategy="sequential")
    clock = Clock(args.device, args.warmup, args.steps)

    class Timed(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                clock.start()

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.steps:
                clock.stop()

    trainer = DPOTrainer(model=model, ref_model=ref, args=config, peft_config=peft_config,
                         train_dataset=datasets.Dataset.from_list(pairs(args.pairs)),
                         processing_class=tok, callbacks=[Timed()])
    setup = time.perf_counter() - t_setup
    data = trainer.train_dataset
    rows = [{"prompt": r["prompt_ids"], "chosen": r["chosen_ids"], "rejected": r["rejected_ids"]}
            for r in data.select(range(min(len(data), max(args.steps * args.batch_size, args.compare))))]
    trainer.train()
    used = rows[args.warmup * args.batch_size:args.steps * args.batch_size]
    return {**clock.result(), "pairs": len(used), "tokens": _tokens(used), "setup_s": setup,
            "ids": [[p["prompt"], p["chosen"], p["rejected"]] for p in rows[:args.compare]]}


def child(which: str, model_dir: Path, args) -> None:
    checkpointing = args.checkpointing == "on"
    result = (run_aihf if which == "aihf" else run_trl)(model_dir, args, checkpointing)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (a Llama of --hidden × --layers) or a model folder")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank on both sides (0: full fine-tuning)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--warmup", type=int, default=3, help="steps run before the timed ones, on both sides")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per row (median reported)")
    parser.add_argument("--reference", choices=["live", "precomputed"], default="live")
    parser.add_argument("--share-prompt", choices=["on", "off"], default="on",
                        help="aihf only (no TRL option); aihf's default is on")
    parser.add_argument("--compare", type=int, default=10**9, help="pairs whose token ids are compared")
    parser.add_argument("--child", choices=["aihf", "trl"])
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.model_dir, args)

    import torch
    import transformers
    import trl
    if args.model == "tiny":
        model_dir = Path(tempfile.mkdtemp()) / "tiny-llama"
        prepare_tiny(model_dir, args)
        what = f"tiny Llama {args.layers}×{args.hidden}"
    else:
        model_dir, what = Path(args.model).resolve(), Path(args.model).name
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores), {args.threads} threads"
    print(f"DPO, {what}, batch {args.batch_size}, {args.steps} steps, max length {args.max_length}, {args.precision}"
          f"{f', LoRA r={args.lora}' if args.lora else ''}, reference log-probs {args.reference}, aihf prompt "
          f"sharing {args.share_prompt}; {device}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, trl {trl.__version__}\n")
    print(f"{args.warmup} warm-up steps, then steps {args.warmup + 1}–{args.steps} timed; median of {args.repeats} "
          f"run(s) per side\n")
    print("| checkpointing | aihf pairs/s | TRL pairs/s | aihf / TRL pairs/s | aihf / TRL tokens/s | loop peak MB aihf, "
          "TRL | aihf / TRL peak | training MB aihf, TRL | aihf / TRL training | tokens/pair aihf, TRL | set-up s aihf, "
          "TRL | runs' pairs/s aihf; TRL |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ckpt in (("off", "on") if args.checkpointing == "both" else (args.checkpointing,)):
        runs = {"aihf": [], "trl": []}
        for _ in range(args.repeats):  # alternating sides, so a slow spell of the machine hits both
            for which in ("aihf", "trl"):
                argv = [a for a in sys.argv[1:]]
                cmd = [sys.executable, __file__, *argv, "--child", which, "--model-dir", str(model_dir),
                       "--checkpointing", ckpt]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
                runs[which].append(json.loads(line[-1][7:]))
        results = {}
        for which, rs in runs.items():  # the run of median speed, with the median memory
            rs.sort(key=lambda r: r["pairs"] / r["seconds"])
            results[which] = {**rs[len(rs) // 2], "peak_mb": statistics.median(r["peak_mb"] for r in rs),
                              "before_mb": statistics.median(r["before_mb"] for r in rs),
                              "spread": [round(r["pairs"] / r["seconds"], 1) for r in rs]}
        a, t = results["aihf"], results["trl"]
        differ = [i for i, (x, y) in enumerate(zip(a["ids"], t["ids"])) if x != y]
        if differ or len(a["ids"]) != len(t["ids"]):
            i = differ[0] if differ else min(len(a["ids"]), len(t["ids"]))
            sys.exit(f"the two sides tokenise pair {i} differently:\n aihf {a['ids'][i] if i < len(a['ids']) else None}"
                     f"\n TRL  {t['ids'][i] if i < len(t['ids']) else None}")
        for r in (a, t):
            r["pairs_per_s"], r["tokens_per_s"] = r["pairs"] / r["seconds"], r["tokens"] / r["seconds"]
        for r in (a, t):
            r["train_mb"] = max(r["peak_mb"] - r["before_mb"], 1e-9)
        print(f"| {ckpt} | {a['pairs_per_s']:.1f} | {t['pairs_per_s']:.1f} | **{a['pairs_per_s'] / t['pairs_per_s']:.2f}** "
              f"| {a['tokens_per_s'] / t['tokens_per_s']:.2f} | {a['peak_mb']:.0f}, {t['peak_mb']:.0f} "
              f"| {a['peak_mb'] / t['peak_mb']:.2f} | {a['train_mb']:.0f}, {t['train_mb']:.0f} "
              f"| {a['train_mb'] / t['train_mb']:.2f} | {a['tokens'] / a['pairs']:.1f}, {t['tokens'] / t['pairs']:.1f} "
              f"| {a['setup_s']:.1f}, {t['setup_s']:.1f} | {a['spread']}; {t['spread']} |",
              flush=True)
    print(f"\nevery pair's prompt, chosen and rejected token ids identical on both sides "
          f"({min(args.compare, args.pairs)} pairs compared)")


if __name__ == "__main__":
    main()
