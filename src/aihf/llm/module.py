"""The language-model LightningModule: the AIHF objective of docs/design.md §1–2 for Hugging Face models.

One `training_step` is one gradient step of one stage:
1. SFT warm start (`algo.bc_warmstart_steps` NLL steps on D); then π_ref ← π, frozen.
2. Reward pre-fit (`algo.reward_pretrain_steps`, explicit reward only; for `schedule=sequential` the whole fit).
3. `llm.train.policy_steps` steps of the preset's policy update:
   - `rloo`: REINFORCE leave-one-out on r_φ(x, y) − β·log π/π_ref, with reward steps interleaved every
     `algo.reward_every` steps when `schedule=alternating` (AIHF);
   - `direct`: the implicit-reward objective λ_D·(NLL or SPIN term on D) + λ_P·(DPO/IPO on P) (+ RPO's NLL);
   - `bc`: SFT; `none`: the step is a reward step (the `rm` preset).
The explicit reward step is λ_D·log σ(r(x, y^E) − r(x, y^π)) + λ_P·BT(P), with y^π a fresh policy sample.
Presets only switch these parts on and off (conf/algo/); nothing here asks which preset is running.

This file is the loop: set-up, the stage schedule, data order, π_ref's freeze and the run's state. Its parts are
mixins and modules of their own: what it asks of the models (`scoring.py`), the update rules (`updates.py`),
evaluation (`evaluation.py`), the data mix (`data_mix.py`); the models are components (`models.py`, llm.policy,
llm.reference and llm.reward `_target_`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from aihf import objectives
from aihf.callbacks import CheckpointEvery
from aihf.checks import overridden_keys
from aihf.errors import ConfigError, TrainingDiverged
from aihf.llm import data as llm_data
from aihf.llm import data_mix
from aihf.llm.evaluation import Evaluation
from aihf.llm.gold import get_gold
from aihf.llm.models import build, build_policy, build_tokenizer, is_lora, merge_adapter_into_base
from aihf.llm.order import EpochOrder
from aihf.llm.reference_cache import ReferenceLogps
from aihf.llm.scoring import Scoring
from aihf.llm.updates import UpdateRules
from aihf.nonfinite import FiniteWatch
from aihf.provenance import commit_record, git_commit, platform_record
from aihf.resume import BudgetStream, Continuable
from aihf.run_dir import save_metrics

log = logging.getLogger(__name__)

REWARD_SOURCES = ("learned", "implicit")
POLICY_UPDATES = ("rloo", "direct", "bc", "none")
SCHEDULES = ("alternating", "sequential")


def validate(cfg: DictConfig) -> None:
    a, t = cfg.algo, cfg.llm.train
    for key, value, allowed in (("algo.reward_source", a.reward_source, REWARD_SOURCES),
                                ("algo.policy_update", a.policy_update, POLICY_UPDATES),
                                ("algo.schedule", a.schedule, SCHEDULES),
                                ("algo.weighting", a.weighting, objectives.WEIGHTINGS),
                                ("algo.dpo_loss_type", a.dpo_loss_type, ("sigmoid", "ipo", "ipo_sum")),
                                ("algo.demo_term", a.demo_term, ("nll", "selfplay")),
                                ("llm.data.format", cfg.llm.data.format, llm_data.FORMATS)):
        if value not in allowed:
            hint = " (a MuJoCo preset? use an LLM preset: see conf/algo/)" if key == "algo.policy_update" else ""
            raise ConfigError(f"{key}={value!r}: expected one of {allowed}{hint}")
    if a.policy_update == "rloo" and a.reward_source != "learned":
        raise ConfigError("algo.policy_update=rloo needs an explicit reward: set algo.reward_source=learned")
    if a.policy_update == "direct" and a.reward_source != "implicit":
        raise ConfigError("algo.policy_update=direct optimises the implicit reward: set algo.reward_source=implicit")
    if a.policy_update in ("rloo", "none") and a.demo_weight == 0 and a.pref_weight == 0:
        raise ConfigError("algo.demo_weight and algo.pref_weight are both 0: the reward has no data")
    if a.policy_update == "rloo" and t.rl_samples < 2:
        raise ConfigError(f"llm.train.rl_samples={t.rl_samples}: RLOO's leave-one-out baseline needs at least 2")
    if isinstance(a.beta, bool) or not isinstance(a.beta, (int, float)) or a.beta <= 0:
        raise ConfigError(f"algo.beta={a.beta}: the LLM objectives need a KL coefficient β > 0")
    d = cfg.llm.data
    if d.split_folds > 0 and d.split_fold >= d.split_folds:
        raise ConfigError(f"llm.data.split_fold={d.split_fold}: expected 0 to {d.split_folds - 1} "
                          f"(llm.data.split_folds={d.split_folds})")


class LLMAIHF(Scoring, UpdateRules, Evaluation, Continuable, pl.LightningModule):
    STATE_KEY, DOMAIN = "aihf_llm", "language-model"
    INIT_FROM_SAME = ("llm.data.name", "algo.reward_source")
    EXACT_RESUME = True  # loop.resume: the checkpoint holds the complete state (tests/test_llm_resume.py)
    # What a resumed run may change: the budget, the evaluation and checkpoint schedules, threads, prompt sharing
    # and the fused head (the same numbers up to rounding), where a reference table is cached, logging and display,
    # and what this domain does not read.
    RESUMABLE = ("llm.train.policy_steps", "llm.train.epochs", "llm.train.eval_every", "llm.train.checkpoint_every",
                 "llm.train.keep_checkpoints", "llm.train.torch_threads", "llm.train.share_prompt",
                 "llm.train.fused_head", "llm.train.reference_cache_dir", "loop.", "data.", "env.", "policy.",
                 "teacher.", "collect.", "debug", "run_dir", "logger.", "trainer.enable_progress_bar",
                 "trainer.log_every_n_steps")

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        validate(cfg)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        torch.set_num_threads(cfg.llm.train.torch_threads)
        a, d = cfg.algo, cfg.llm.data
        if cfg.llm.train.epochs is not None and "llm.train.policy_steps" in overridden_keys():
            raise ConfigError("llm.train.epochs and llm.train.policy_steps both set: the main stage's length is one "
                              "or the other")
        self.explicit = a.reward_source == "learned"
        self.trains_policy = a.policy_update != "none"
        needs_demos = (a.bc_warmstart_steps > 0 and self.trains_policy) or a.policy_update == "bc" or (
            a.demo_weight != 0 and a.policy_update in ("rloo", "direct", "none"))
        needs_prefs = a.pref_weight != 0 and a.policy_update in ("rloo", "direct", "none")
        self.text, self.dropped_overlap, self.data_subset, pool = data_mix.load_text(cfg, None, needs_demos,
                                                                                     needs_prefs)
        # a tokenizer trained here learns from the pool the training rows were drawn from, not the draw: token ids
        # follow frequencies, so a corpus that changed with the draw would change π_ref's initialisation
        corpus = [r["prompt"] + " " + r["response"] for r in pool["demos"] + self.text["heldout_demos"]]
        corpus += [r["prompt"] + " " + r[k] for r in pool["prefs"] + self.text["heldout_prefs"]
                   for k in ("chosen", "rejected")]
        corpus += self.text["eval_prompts"]
        self.tokenizer = build_tokenizer(cfg.llm.tokenizer, corpus)
        if d.format == "chat":  # message lists are rendered by the tokenizer's chat template
            self.text, self.dropped_overlap, self.data_subset, _ = data_mix.load_text(cfg, self.tokenizer,
                                                                                      needs_demos, needs_prefs)
        self.encoder = llm_data.Encoder(self.tokenizer, d.max_length, d.max_prompt_length, d.prompt_truncation)
        self.data = data_mix.encode(self.text, self.encoder)

        self.policy = build_policy(cfg.llm.policy, self.tokenizer)
        if self.trains_policy:
            self._check_positions()
        self.reference = self.build_reference()
        # Self-play moves its opponent (`reference`) along with π; the DPO term, the KL and the implicit reward are
        # measured against the fixed π_ref (`anchor`, the SFT policy), as docs/design.md §2 defines them.
        if a.reference_refresh_every > 0 and is_lora(self.policy):
            raise ConfigError(f"algo.reference_refresh_every={a.reference_refresh_every} with llm.policy.lora_r="
                              f"{cfg.llm.policy.lora_r}: a LoRA policy's reference is its base model, and self-play's "
                              f"moving opponent needs a copy of its own; set llm.policy.lora_r=0")
        self.anchor = self.build_reference() if a.reference_refresh_every > 0 else None
        self.reward = (build(cfg.llm.reward, "llm.reward", "aihf.llm.models.ScalarReward", policy=self.policy,
                             policy_tokenizer=self.tokenizer) if self.explicit else None)
        if self.reward is not None and cfg.llm.reward.init_from_policy and self.reward.same_tokenizer:
            why = self.reward.backbone_mismatch(self.policy)
            if why is not None:  # checked now, not after the whole SFT stage has run
                raise ConfigError(f"llm.reward.init_from_policy=true, but {why}: set "
                                  f"llm.reward.init_from_policy=false")
        if self.reward is not None and not self.reward.same_tokenizer:
            # The reward's own tokens under the data's truncation rule, within the reward's length.
            r_max = cfg.llm.reward.max_length
            limit_key = "llm.data.max_prompt_length" if d.max_prompt_length < r_max else "llm.reward.max_length - 1"
            self.reward_encoder = llm_data.Encoder(self.reward.tokenizer, r_max, min(d.max_prompt_length, r_max - 1),
                                                   d.prompt_truncation, ("llm.reward.max_length", limit_key))
            self.reward_data = data_mix.encode(self.text, self.reward_encoder, ("demos", "prefs", "heldout_prefs"))
        else:
            self.reward_encoder, self.reward_data = self.encoder, self.data
        self.gold = get_gold(d.gold)

        # Each data part is read in shuffled epochs (llm/order.py); sampling uses the global RNG. Both checkpointed.
        self.orders: dict[str, EpochOrder] = {}
        self.steps_done = 0
        self.sft_updates = self.reward_updates = self.policy_updates = 0
        self._pending_orders: dict[str, dict] = {}
        self.skipped_updates, self._skipped_now = 0, False  # llm.train.nonfinite=skip
        self._grad_norms: dict[str, torch.Tensor] = {}
        self._watch = FiniteWatch()
        self.reference_frozen = False
        self.ref_table: ReferenceLogps | None = None  # llm.train.reference_logps=precomputed, once π_ref is frozen
        self.history: list[dict] = []
        self.samples: list[dict] = []
        self.pair_outcomes: list[dict] = []  # the last evaluation's held-out pairs (evaluation.py)
        self.length_gap_cache: dict[str, torch.Tensor] = {}  # evaluation.py: the length baseline's inputs
        self.final_metrics: dict | None = None
        self.run_dir = Path(cfg.run_dir)
        self._t0 = time.perf_counter()
        self.started_commit = git_commit()  # the code this run starts with (provenance.commit_record)

    # -- setup -------------------------------------------------------------------------------------------
    def build_reference(self):
        return build(self.cfg.llm.reference, "llm.reference", "aihf.llm.models.frozen_copy", policy=self.policy)

    def _check_positions(self) -> None:
        limit = getattr(self.policy.config, "max_position_embeddings", None) or getattr(
            self.policy.config, "n_positions", None)
        d, t = self.cfg.llm.data, self.cfg.llm.train
        need = max(d.max_length, d.max_prompt_length + t.max_new_tokens)
        if limit is not None and need > limit:
            raise ConfigError(f"sequences of up to {need} tokens (llm.data.max_length, llm.data.max_prompt_length + "
                              f"llm.train.max_new_tokens) exceed the policy's {limit} positions")

    def configure_optimizers(self):
        p = self.cfg.llm.policy
        lr = p.warmstart_lr if p.warmstart_lr is not None and not self.reference_frozen else p.lr
        trainable = [q for q in self.policy.parameters() if q.requires_grad]  # a LoRA policy: its adapter only
        # fused: one kernel per step over all tensors, without the per-tensor temporaries of the default loop (the
        # size of the largest weight, several at once), as TRL's default optimiser (adamw_torch_fused). Not under
        # Lightning's mixed precision, which refuses to clip the gradients of an optimiser that may unscale them
        fused = str(self.cfg.trainer.get("precision", "32-true")) in ("32", "32-true")
        opts = [torch.optim.AdamW(trainable, lr=lr, weight_decay=p.weight_decay, fused=fused)]
        if self.reward is not None:
            r = self.cfg.llm.reward
            opts.append(torch.optim.AdamW(self.reward.parameters(), lr=r.lr, weight_decay=r.weight_decay,
                                          fused=fused))
        return opts

    def plan(self) -> tuple[int, int, int]:
        """Steps of the three stages: SFT warm start, reward pre-fit, main stage."""
        return self.plan_of(self.cfg, self.main_rows())

    @staticmethod
    def plan_of(cfg: DictConfig, main_rows: int | None) -> tuple[int, int, int]:
        a, t = cfg.algo, cfg.llm.train
        trains_policy, explicit = a.policy_update != "none", a.reward_source == "learned"
        warm = a.bc_warmstart_steps if trains_policy else 0
        pre = a.reward_pretrain_steps if explicit and trains_policy else 0
        if t.epochs is None:
            return warm, pre, t.policy_steps
        return warm, pre, math.ceil(t.epochs * main_rows / LLMAIHF.main_source_of(cfg)[1])

    @staticmethod
    def budget_of(cfg: DictConfig, state: dict | None = None) -> int:
        """The step budget under `cfg` (with epochs, of the data size a checkpoint's state recorded)."""
        return sum(LLMAIHF.plan_of(cfg, (state or {}).get("main_rows")))

    def rows(self, part: str) -> int:
        """How many rows a data part has ("rl_pool": the prompts of D then P)."""
        return len(self.data["demos"]) + len(self.data["prefs"]) if part == "rl_pool" else len(self.data[part])

    def main_rows(self) -> int:
        return self.rows(self.main_source()[0])

    @property
    def budget(self) -> int:
        return sum(self.plan())

    def train_dataloader(self):
        # Steps until `progress` reaches the budget, however far a resumed run already is (no DataLoader shuffling:
        # its seed would come from the global RNG, which sampling uses).
        return torch.utils.data.DataLoader(BudgetStream(self), batch_size=None, generator=torch.Generator())

    def on_train_start(self) -> None:
        torch.set_num_threads(self.cfg.llm.train.torch_threads)
        if self.plan()[0] == 0 and not self.reference_frozen:
            self.freeze_reference()
        if self.cfg.llm.train.eval_at_start and self.steps_done == 0:
            self.evaluate_and_log()

    # -- batches -----------------------------------------------------------------------------------------
    def draw(self, part: str, n: int) -> list[int]:
        """The next n indices of `part` (or of "rl_pool", the prompts of D then P) in its epoch order; under DDP each
        rank its own share of the same order."""
        if part not in self.orders:
            size = self.rows(part)
            rank, world = (self.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
            self.orders[part] = EpochOrder(size, self.cfg.seed, part, rank, world)
            if part in self._pending_orders:
                self.orders[part].load_state_dict(self._pending_orders.pop(part))
        return self.orders[part].take(n)

    def main_source(self) -> tuple[str, int]:
        return self.main_source_of(self.cfg)

    @staticmethod
    def main_source_of(cfg: DictConfig) -> tuple[str, int]:
        """The part the main stage reads (its epochs are `train/epoch`) and how many of its rows one step takes."""
        a, t = cfg.algo, cfg.llm.train
        if a.policy_update == "rloo":
            return "rl_pool", t.rl_prompts
        if a.policy_update == "none":
            return ("prefs", cfg.llm.reward.batch_size) if a.pref_weight != 0 else ("demos", cfg.llm.reward.batch_size)
        if a.policy_update == "direct" and a.pref_weight != 0:
            return "prefs", t.batch_size
        return "demos", t.batch_size

    # -- steps -------------------------------------------------------------------------------------------
    def freeze_reference(self) -> None:
        """End of the SFT stage: π_ref ← π (and the explicit reward may start from π's transformer)."""
        lora = is_lora(self.policy)
        if lora:  # the adapter-disabled base becomes π: fold the SFT adapter in, restart it from zero
            merge_adapter_into_base(self.policy)
        else:
            self.reference.load_state_dict(self.policy.state_dict())
        if self.anchor is not None:
            self.anchor.load_state_dict(self.policy.state_dict())
        if self.reward is not None and self.cfg.llm.reward.init_from_policy and self.reward.same_tokenizer:
            self.reward.init_backbone_from(self.policy)
        self.reference_frozen = True
        if self._trainer is not None:  # the main stage's learning rate from here on
            opt = self.optimizers(use_pl_optimizer=False)
            opt = opt[0] if isinstance(opt, (list, tuple)) else opt
            for group in opt.param_groups:
                group["lr"] = self.cfg.llm.policy.lr
            if lora:
                opt.state.clear()  # the moments of an adapter that has just been folded in and restarted

    def training_step(self, batch, batch_idx):
        if self.steps_done >= self.budget:
            return  # Lightning fetched one item past the budget
        self._skipped_now, self._grad_norms = False, {}
        warm, pre, _ = self.plan()
        a, i = self.cfg.algo, self.steps_done
        if i < warm:
            metrics = self.sft_step()
            if i + 1 == warm:
                self.freeze_reference()
        elif i < warm + pre:
            metrics = self.reward_step()
        else:
            metrics = {}
            if a.policy_update == "none":
                metrics.update(self.reward_step())
            else:
                alternating = self.explicit and a.schedule == "alternating" and a.reward_every > 0
                if alternating and self.policy_updates % a.reward_every == 0:
                    for _ in range(a.reward_steps):
                        metrics.update(self.reward_step())
                step = {"rloo": self.rl_step, "direct": self.direct_step, "bc": self.sft_step}[a.policy_update]
                metrics.update(step())
                self.policy_updates += 1
                refresh = a.reference_refresh_every
                if refresh > 0 and self.policy_updates % refresh == 0:
                    self.reference.load_state_dict(self.policy.state_dict())
        self.steps_done += 1
        metrics.update(self._grad_norms)
        main = self.orders.get(self.main_source()[0])
        if i >= warm + pre and main is not None:
            metrics["train/epoch"] = main.epochs_done
        if self._skipped_now:  # the skipped update's non-finite loss is not a result: drop it, count the skip
            metrics = {k: v for k, v in metrics.items() if v is not None and bool(torch.isfinite(torch.as_tensor(v)))}
        if self.cfg.llm.train.nonfinite == "skip":
            metrics["train/skipped_updates"] = float(self.skipped_updates)
        self.check_finite(metrics)
        self._log({k: v for k, v in metrics.items() if v is not None}, self.steps_done)
        every, total = self.cfg.llm.train.eval_every, self.budget
        if self.steps_done == total:
            self.finish()  # here, not in on_train_end: the final checkpoint (written next) holds the results
        elif every > 0 and self.steps_done % every == 0:
            self.evaluate_and_log()
        self.log_dict({"step": float(self.steps_done)}, prog_bar=True, on_step=True, batch_size=1)

    def check_finite(self, metrics: dict) -> None:
        """Stop at the first NaN or infinite loss, training or evaluation metric, naming it, the step and its last
        finite value; metrics.json records the failure (strict JSON) and the history so far."""
        values = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in metrics.items() if v is not None}
        bad = self._watch.first_bad(values)
        if bad is None:
            self._watch.last.update(values)
            return
        message = (f"{self._watch.message(*bad, self.steps_done)}; the last checkpoint in "
                   f"{self.run_dir / 'checkpoints'} (if any) is the last good state")
        if self._is_global_zero():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            result = {"domain": "llm", "algo": self.cfg.algo.name, "seed": self.cfg.seed, "status": "diverged",
                      "error": message, "steps": self.steps_done, "skipped_updates": self.skipped_updates,
                      "history": self.history}
            save_metrics(self.run_dir / "metrics.json", result)
        raise TrainingDiverged(message)

    def _log(self, metrics: dict, step: int) -> None:
        clean = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in metrics.items() if v is not None}
        clean = {k: v for k, v in clean.items() if math.isfinite(v)}
        for logger in self.loggers:
            logger.log_metrics(clean, step=step)

    def on_train_end(self) -> None:
        if self.final_metrics is None:  # a budget already spent before this fit (nothing to train)
            self.finish()
        if self._is_global_zero():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_metrics(self.run_dir / "metrics.json", self.final_metrics)

    def finish(self) -> None:
        """The final evaluation and the run's results."""
        final = self.evaluate_and_log()
        a, d = self.cfg.algo, self.cfg.llm.data
        self.final_metrics = {
            "domain": "llm", "task": d.name, "algo": a.name, "seed": self.cfg.seed, "weighting": a.weighting,
            # the data the preset learns from (an SFT or SPIN run records no preference pairs)
            "beta": a.beta, "num_demos": len(self.data["demos"]),
            "num_prefs": len(self.data["prefs"]) if a.pref_weight != 0 and a.policy_update != "bc" else 0,
            "demo_weight": a.demo_weight, "pref_weight": a.pref_weight, **commit_record(self.started_commit),
            "platform": platform_record(),
            "steps": self.steps_done, "sft_updates": self.sft_updates, "reward_updates": self.reward_updates,
            "policy_updates": self.policy_updates, "skipped_updates": self.skipped_updates,
            "heldout_rows_with_training_prompts_dropped": self.dropped_overlap, "data_subset": self.data_subset,
            **final,
            "samples": self.samples, "history": self.history,
            # each held-out pair's margin (by the pair's text hash), for paired comparisons of runs on one split
            "heldout_pairs": self.pair_outcomes,
            "status": "finished"}

    def _is_global_zero(self) -> bool:
        return self._trainer is None or self.trainer.is_global_zero

    def summary(self) -> str:
        m = self.final_metrics
        parts = [f"algo={m['algo']} task={m['task']} seed={m['seed']}"]
        for key, label in (("eval/gold_sampled", "gold (sampled)"), ("eval/gold_greedy", "gold (greedy)"),
                           ("eval/kl", "KL to ref"), ("eval/pref_accuracy", "held-out pref accuracy")):
            if key in m:
                parts.append(f"{label} {m[key]:.3f}")
        return "; ".join(parts) + f"; metrics in {self.run_dir / 'metrics.json'}"

    # -- state -------------------------------------------------------------------------------------------
    @property
    def progress(self) -> int:
        return self.steps_done

    def configure_callbacks(self):
        if not self.cfg.trainer.enable_checkpointing:
            return []
        t = self.cfg.llm.train
        return [CheckpointEvery(self.run_dir / "checkpoints", t.checkpoint_every, t.keep_checkpoints)]

    def on_fit_start(self) -> None:
        samples = self.run_dir / "samples.jsonl"
        if self.cfg.loop.resume is not None and self.steps_done > 0 and samples.is_file() and self._is_global_zero():
            # as the CSV log: the killed run's rows after its checkpoint are written again by the resumed run
            rows = [r for r in samples.read_text().splitlines() if json.loads(r)["step"] <= self.steps_done]
            samples.write_text("".join(r + "\n" for r in rows))
        opts = self.optimizers(use_pl_optimizer=False)
        self.restore_pending_optimizers(opts if isinstance(opts, (list, tuple)) else [opts])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aihf_llm"] = {"orders": {k: o.state_dict() for k, o in self.orders.items()},
                                  "torch_rng": torch.get_rng_state(),
                                  "steps_done": self.steps_done, "sft_updates": self.sft_updates,
                                  "reward_updates": self.reward_updates, "policy_updates": self.policy_updates,
                                  "reference_frozen": self.reference_frozen, "history": self.history,
                                  "skipped_updates": self.skipped_updates, "progress": self.steps_done,
                                  "main_rows": self.main_rows(), "final_metrics": self.final_metrics,
                                  "samples": self.samples,
                                  "git_commit": self.started_commit,
                                  "reference_logps": None if self.ref_table is None else
                                  {"key": self.ref_table.key, "table": self.ref_table.table}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        s = checkpoint["aihf_llm"]
        self._pending_orders = dict(s.get("orders", {}))  # applied as each part's order is first used
        for part, order in list(self.orders.items()):
            if part in self._pending_orders:
                order.load_state_dict(self._pending_orders.pop(part))
        torch.set_rng_state(s["torch_rng"])
        self.steps_done, self.sft_updates = s["steps_done"], s["sft_updates"]
        self.reward_updates, self.policy_updates = s["reward_updates"], s["policy_updates"]
        self.reference_frozen, self.history = s["reference_frozen"], s["history"]
        self.skipped_updates = s.get("skipped_updates", 0)  # absent from checkpoints written before nonfinite
        self.final_metrics, self.samples = s.get("final_metrics"), s.get("samples", [])
        self.started_commit = s.get("git_commit")  # absent (None: unknown) from checkpoints before this record
        saved = s.get("reference_logps")
        self.ref_table = None if saved is None else ReferenceLogps(saved["table"], saved["key"])
        if self.ref_table is not None:  # before Lightning loads the weights: a released π_ref is not among them
            self.release_reference()
