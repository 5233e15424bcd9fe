"""The language-model LightningModule: the AIHF objective of DESIGN.md §1–2 for Hugging Face models.

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
"""

from __future__ import annotations

import json
import logging
import math
import random
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
from aihf.llm.gold import get_gold
from aihf.llm.models import build, build_policy, build_tokenizer, is_lora, merge_adapter_into_base
from aihf.llm.order import EpochOrder
from aihf.llm.reference_cache import ReferenceLogps
from aihf.llm.sequences import generate, pad_right, response_logps, shared_prompt_logps
from aihf.nonfinite import FiniteWatch, grad_norm
from aihf.paths import resolve, resolve_dir
from aihf.provenance import git_commit
from aihf.resume import BudgetStream, Continuable
from aihf.run_dir import json_safe

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


def split_by_prompt(pairs: list[dict], fraction: float, cap: int) -> tuple[list[dict], list[dict]]:
    """A fixed held-out split (not the run's seed) by prompt: every pair of a prompt falls on one side, so no
    held-out prompt is also a training prompt. About `fraction` of the pairs (at most `cap`) are held out."""
    prompts = sorted({p["prompt"] for p in pairs})
    random.Random(0).shuffle(prompts)
    target, held, chosen = min(cap, int(round(len(pairs) * fraction))), 0, set()
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p["prompt"]] = counts.get(p["prompt"], 0) + 1
    for prompt in prompts:
        if held >= target:
            break
        if held + counts[prompt] <= cap:
            chosen.add(prompt)
            held += counts[prompt]
    return [p for p in pairs if p["prompt"] in chosen], [p for p in pairs if p["prompt"] not in chosen]


def drop_seen_prompts(parts: dict) -> dict:
    """Held-out rows and evaluation prompts whose prompt is also a training prompt are dropped (they would measure
    memorisation, not generalisation); returns how many of each, which the run logs and records."""
    seen = {r["prompt"] for r in parts["demos"] + parts["prefs"]}
    dropped = {}
    for part in ("heldout_demos", "heldout_prefs", "eval_prompts"):
        rows = parts[part]
        keep = [r for r in rows if (r if part == "eval_prompts" else r["prompt"]) not in seen]
        if len(keep) < len(rows):
            dropped[part] = len(rows) - len(keep)
            log.warning("llm.data.%s: %d of %d rows have a training prompt and are left out of the evaluation",
                        part, len(rows) - len(keep), len(rows))
        parts[part] = keep
    return dropped


class LLMAIHF(Continuable, pl.LightningModule):
    STATE_KEY, DOMAIN = "aihf_llm", "language-model"
    INIT_FROM_SAME = ("llm.data.name", "algo.reward_source")
    EXACT_RESUME = True  # loop.resume: the checkpoint holds the complete state (tests/test_llm_resume.py)
    # What a resumed run may change: the budget, the evaluation and checkpoint schedules, threads, logging and
    # display, and what this domain does not read.
    RESUMABLE = ("llm.train.policy_steps", "llm.train.epochs", "llm.train.eval_every", "llm.train.checkpoint_every",
                 "llm.train.keep_checkpoints", "llm.train.torch_threads", "loop.", "data.", "env.", "policy.",
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
        self.text = self._load_text(needs_demos, needs_prefs)
        corpus = [r["prompt"] + " " + r["response"] for r in self.text["demos"] + self.text["heldout_demos"]]
        corpus += [r["prompt"] + " " + r[k] for r in self.text["prefs"] + self.text["heldout_prefs"]
                   for k in ("chosen", "rejected")]
        corpus += self.text["eval_prompts"]
        self.tokenizer = build_tokenizer(cfg.llm.tokenizer, corpus)
        if d.format == "chat":  # message lists are rendered by the tokenizer's chat template
            self.text = self._load_text(needs_demos, needs_prefs)
        self.encoder = llm_data.Encoder(self.tokenizer, d.max_length, d.max_prompt_length, d.prompt_truncation)
        self.data = self._encode(self.encoder)

        self.policy = build_policy(cfg.llm.policy, self.tokenizer)
        if self.trains_policy:
            self._check_positions()
        self.reference = self.build_reference()
        # Self-play moves its opponent (`reference`) along with π; the DPO term, the KL and the implicit reward are
        # measured against the fixed π_ref (`anchor`, the SFT policy), as DESIGN §2 defines them.
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
            self.reward_data = self._encode(self.reward_encoder, parts=("demos", "prefs", "heldout_prefs"))
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
        self.final_metrics: dict | None = None
        self.run_dir = Path(cfg.run_dir)
        self._t0 = time.perf_counter()

    # -- setup -------------------------------------------------------------------------------------------
    def build_reference(self):
        return build(self.cfg.llm.reference, "llm.reference", "aihf.llm.models.frozen_copy", policy=self.policy)

    def _load_text(self, needs_demos: bool, needs_prefs: bool) -> dict:
        d = self.cfg.llm.data
        tok = getattr(self, "tokenizer", None)
        out = {k: [] for k in ("demos", "prefs", "heldout_demos", "heldout_prefs", "eval_prompts")}
        if d.format == "chat" and tok is None:
            return out  # rendered once the tokenizer (with its chat template) exists

        if d.empty_responses not in ("error", "drop"):
            raise ConfigError(f"llm.data.empty_responses={d.empty_responses!r}: expected error or drop")

        def read(key, convert):
            try:
                rows, label = llm_data.load_rows(resolve(d[key]), d.split)
                return convert(rows, d.format, label, tok, d.empty_responses == "drop")
            except ConfigError as exc:
                raise ConfigError(f"llm.data.{key}: {exc}") from None

        asked = overridden_keys()

        def take(rows: list, key: str, what: str) -> list:
            """The first llm.data.<key> rows: a preset's count is a cap, a count set on the command line a demand."""
            n = d[key]
            if len(rows) < n and f"llm.data.{key}" in asked:
                raise ConfigError(f"llm.data.{key}={n}, but the data holds {len(rows)} {what}")
            return rows[:n]

        if d.prefs:
            prefs = read("prefs", llm_data.to_pairs)
            if d.heldout_prefs:
                out["heldout_prefs"] = read("heldout_prefs", llm_data.to_pairs)[:d.num_heldout]
            elif d.heldout_fraction > 0:
                out["heldout_prefs"], prefs = split_by_prompt(prefs, d.heldout_fraction, d.num_heldout)
            out["prefs"] = take(prefs, "num_prefs", "training preference pairs")
        if d.demos:
            out["demos"] = take(read("demos", llm_data.to_demos), "num_demos", "demonstrations")
        elif d.demos_from_prefs and d.prefs:
            out["demos"] = take([{"prompt": p["prompt"], "response": p["chosen"]} for p in out["prefs"]],
                                "num_demos", "demonstrations (chosen responses of the training pairs)")
        if d.heldout_demos:
            out["heldout_demos"] = read("heldout_demos", llm_data.to_demos)[:d.num_heldout]
        elif d.demos_from_prefs:
            out["heldout_demos"] = [{"prompt": p["prompt"], "response": p["chosen"]} for p in out["heldout_prefs"]]
        if d.eval_prompts:
            out["eval_prompts"] = read("eval_prompts", llm_data.to_prompts)[:d.num_heldout]
        else:
            out["eval_prompts"] = [r["prompt"] for r in out["heldout_prefs"] or out["heldout_demos"]][:d.num_heldout]
        self.dropped_overlap = drop_seen_prompts(out)
        if needs_demos and not out["demos"]:
            raise ConfigError(f"algo={self.cfg.algo.name} needs demonstrations: set llm.data.demos (or "
                              f"llm.data.demos_from_prefs=true) and llm.data.num_demos > 0")
        if needs_prefs and not out["prefs"]:
            raise ConfigError(f"algo={self.cfg.algo.name} needs preference pairs: set llm.data.prefs and "
                              f"llm.data.num_prefs > 0")
        return out

    def _encode(self, enc: llm_data.Encoder, parts=("demos", "heldout_demos", "prefs", "heldout_prefs",
                                                      "eval_prompts")) -> dict:
        out = {}
        for part in parts:
            rows = self.text[part]
            if part == "eval_prompts":
                out[part] = [enc.prompt(p, f"llm.data.{part} row {i + 1}") for i, p in enumerate(rows)]
            elif "demos" in part:
                out[part] = [enc.demo(r, f"llm.data.{part} row {i + 1}") for i, r in enumerate(rows)]
            else:
                out[part] = [enc.pair(r, f"llm.data.{part} row {i + 1}") for i, r in enumerate(rows)]
        return out

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
        opts = [torch.optim.AdamW(trainable, lr=lr, weight_decay=p.weight_decay)]
        if self.reward is not None:
            r = self.cfg.llm.reward
            opts.append(torch.optim.AdamW(self.reward.parameters(), lr=r.lr, weight_decay=r.weight_decay))
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

    @property
    def fixed_reference(self):
        """π_ref of the DPO term, the KL and the implicit reward: never refreshed (self-play refreshes `reference`)."""
        return self.anchor if self.anchor is not None else self.reference

    def logps(self, model, prompts, responses):
        return response_logps(model, prompts, responses, self.tokenizer.pad_token_id, self.device,
                              self.cfg.llm.train.logp_chunk)

    def shares_prompt(self, model, prompts) -> bool:
        """Whether k responses per prompt are scored with the prompt run once (llm.train.share_prompt): not for a
        policy training under gradient checkpointing (which turns the key/value cache off) or an empty prompt."""
        base = getattr(model, "policy", model)  # a LoRA reference wraps the policy
        flag = getattr(base, "is_activation_checkpointing", None)  # transformers ≥ 5.2x; is_gradient_... before
        checkpointed = model.training and (flag if flag is not None else getattr(base, "is_gradient_checkpointing",
                                                                                  False))
        return self.cfg.llm.train.share_prompt and not checkpointed and all(prompts) and len(prompts) > 0

    def group_logps(self, model, prompts, responses: list[list[list[int]]]):
        """log π and token counts of k responses per prompt (responses[j][i]: the j-th response to prompt i)."""
        if len(responses) > 1 and self.shares_prompt(model, prompts):
            return shared_prompt_logps(model, prompts, responses, self.tokenizer.pad_token_id, self.device,
                                       self.cfg.llm.train.logp_chunk)
        n = len(prompts)  # one forward pass of every (prompt, response) row, as TRL concatenates chosen and rejected
        logps, counts = self.logps(model, prompts * len(responses), [r for rs in responses for r in rs])
        return ([logps[j * n:(j + 1) * n] for j in range(len(responses))],
                [counts[j * n:(j + 1) * n] for j in range(len(responses))])

    def pair_logps(self, model, prompts, first, second):
        """log π of two responses per prompt in one call."""
        (a, b), (na, nb) = self.group_logps(model, prompts, [first, second])
        return (a, b), (na, nb)

    def repeated_logps(self, model, prompts, responses, k: int):
        """`logps` of rows whose prompts come k at a time (prompt i at rows i·k … i·k + k − 1), in row order."""
        unique = prompts[::k]
        lps, ns = self.group_logps(model, unique, [responses[j::k] for j in range(k)])
        return torch.stack(lps, 1).reshape(-1), torch.stack(ns, 1).reshape(-1)

    def sample(self, model, prompts, greedy=False) -> list[list[int]]:
        t = self.cfg.llm.train
        return generate(model, prompts, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, t.max_new_tokens,
                        t.temperature, greedy, self.device)

    def to_reward_ids(self, responses: list[list[int]]) -> list[list[int]]:
        """Policy token ids → reward token ids (the identity when both share a tokenizer)."""
        if self.reward_encoder is self.encoder:
            return responses
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [self.reward_encoder.response(t, 0) for t in texts]

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """r_φ(x, y) on reward token ids, reading the response's last token."""
        limit = self.cfg.llm.reward.max_length
        pairs = [(p, r[: max(1, limit - len(p))]) for p, r in zip(prompts, responses)]
        ids, attn, _ = pad_right([p for p, _ in pairs], [r for _, r in pairs], self.reward_encoder.tok.pad_token_id,
                                 self.device)
        return self.reward(ids, attn)

    def pair_scores(self, prompts, first, second) -> tuple[torch.Tensor, torch.Tensor]:
        """r_φ of two responses per prompt in one forward pass."""
        scores = self.score(prompts + prompts, first + second)
        return scores[:len(prompts)], scores[len(prompts):]

    # -- objectives on given batches (the reductions are tested on these) ----------------------------------
    def implicit_objective(self, demos: list[dict] | None, prefs: list[dict] | None,
                           selfplay: list[list[int]] | None = None,
                           ref_prefs: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        """λ_D·demo term + λ_P·DPO/IPO on P (+ α·NLL of the chosen responses), all on β·log π/π_ref; `ref_prefs`:
        π_ref's log-probs of the pairs when precomputed."""
        a = self.cfg.algo
        metrics, demo_loss, pref_loss = {}, None, None
        if a.pref_weight != 0 and prefs:
            (pc, pr), (nc, nr) = self.pair_logps(self.policy, [p["prompt"] for p in prefs],
                                                 [p["chosen"] for p in prefs], [p["rejected"] for p in prefs])
            if ref_prefs is not None:
                rc, rr = ref_prefs
            else:
                with torch.no_grad():
                    (rc, rr), _ = self.pair_logps(self.fixed_reference, [p["prompt"] for p in prefs],
                                                  [p["chosen"] for p in prefs], [p["rejected"] for p in prefs])
            pref_loss = self.preference_loss(pc, pr, rc, rr, nc, nr)
            chosen_r, rejected_r = a.beta * (pc - rc).detach(), a.beta * (pr - rr).detach()
            metrics.update({"rewards/chosen": chosen_r.mean(), "rewards/rejected": rejected_r.mean(),
                            "rewards/margins": (chosen_r - rejected_r).mean(),
                            "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
                            "logps/chosen": pc.detach().mean(), "logps/rejected": pr.detach().mean()})
            if a.chosen_nll_weight:
                chosen_nll = objectives.nll_loss(pc, nc)
                metrics["loss/chosen_nll"] = chosen_nll.detach()
        if a.demo_weight != 0 and demos:
            prompts, responses = [d["prompt"] for d in demos], [d["response"] for d in demos]
            if a.demo_term == "nll":
                pe, ne = self.logps(self.policy, prompts, responses)
                # mean: per token (the SFT convention); sum: per response, the unit its count N_D counts
                demo_loss = objectives.nll_loss(pe, ne if a.weighting == "mean" else None)
            else:  # SPIN: the demonstration beats the opponent's (π_ref's) own sample
                (pe, ps), (ne, ns) = self.pair_logps(self.policy, prompts, responses, selfplay)
                with torch.no_grad():
                    (re, rs), _ = self.pair_logps(self.reference, prompts, responses, selfplay)
                demo_loss = self.preference_loss(pe, ps, re, rs, ne, ns)
                metrics["rewards/selfplay_margin"] = (a.beta * ((pe - re) - (ps - rs))).detach().mean()
            metrics["logps/demos"] = (pe / ne.clamp(min=1)).detach().mean()
        loss = objectives.weighted_objective(demo_loss, pref_loss, a.demo_weight, a.pref_weight, a.weighting,
                                             len(self.data["demos"]), len(self.data["prefs"]))
        if a.chosen_nll_weight and pref_loss is not None:
            loss = loss + a.chosen_nll_weight * chosen_nll
        metrics.update({"loss/demo": demo_loss, "loss/pref": pref_loss, "loss/policy": loss})
        return loss, metrics

    def preference_loss(self, pc, pr, rc, rr, nc, nr) -> torch.Tensor:
        """DPO or IPO on the log-ratios of a pair; `ipo` divides each response's log-probs by its token count."""
        a = self.cfg.algo
        if a.dpo_loss_type == "ipo":
            nc, nr = nc.clamp(min=1), nr.clamp(min=1)
            pc, pr, rc, rr = pc / nc, pr / nr, rc / nc, rr / nr
        loss_type = "ipo" if a.dpo_loss_type == "ipo_sum" else a.dpo_loss_type
        return objectives.dpo_loss(pc, pr, rc, rr, a.beta, loss_type, a.label_smoothing)

    def reward_objective(self, demos: list[dict] | None, policy_samples: list[list[int]] | None,
                         prefs: list[dict] | None) -> tuple[torch.Tensor, dict]:
        """λ_D·log σ(r(x, y^E) − r(x, y^π)) + λ_P·BT(P) on the explicit reward (both as losses)."""
        a = self.cfg.algo
        metrics, demo_loss, pref_loss = {}, None, None
        if a.pref_weight != 0 and prefs:
            rw, rl = self.pair_scores([p["prompt"] for p in prefs], [p["chosen"] for p in prefs],
                                      [p["rejected"] for p in prefs])
            pref_loss = objectives.bradley_terry_loss(rw, rl, torch.ones_like(rw))
            metrics["reward/train_pref_accuracy"] = (rw > rl).float().mean()
        if a.demo_weight != 0 and demos:
            prompts = [d["prompt"] for d in demos]
            re, rp = self.pair_scores(prompts, [d["response"] for d in demos], self.to_reward_ids(policy_samples))
            demo_loss = objectives.logistic_demonstration_loss(re, rp)
            metrics["reward/demo_minus_policy"] = (re - rp).detach().mean()
        loss = objectives.weighted_objective(demo_loss, pref_loss, a.demo_weight, a.pref_weight, a.weighting,
                                             len(self.data["demos"]), len(self.data["prefs"]))
        metrics.update({"reward/loss_demo": demo_loss, "reward/loss_pref": pref_loss, "reward/loss": loss})
        return loss, metrics

    # -- steps -------------------------------------------------------------------------------------------
    def _step(self, opt_index: int, loss: torch.Tensor, clip: float | None) -> None:
        opt = self.optimizers()
        opt = opt[opt_index] if isinstance(opt, (list, tuple)) else opt
        opt.zero_grad()
        self.manual_backward(loss)
        norm = grad_norm(opt)  # before clipping: the size of the update the data asked for
        self._grad_norms[f"train/{('policy', 'reward')[opt_index]}_grad_norm"] = norm
        if self.cfg.llm.train.nonfinite == "skip" and not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            opt.zero_grad()
            if self.skipped_updates == 0:
                log.warning("a non-finite loss or gradient at step %d: the update is skipped "
                            "(llm.train.nonfinite=skip); skipped updates are counted in train/skipped_updates",
                            self.steps_done)
            self.skipped_updates += 1
            self._skipped_now = True
            return
        if clip:
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt.step()

    def sft_step(self) -> dict:
        batch = [self.data["demos"][i] for i in self.draw("demos", self.cfg.llm.train.batch_size)]
        lp, n = self.logps(self.policy, [b["prompt"] for b in batch], [b["response"] for b in batch])
        loss = objectives.nll_loss(lp, n)
        self._step(0, loss, self.cfg.llm.policy.grad_clip)
        self.sft_updates += 1
        return {"loss/sft": loss}

    def reward_step(self) -> dict:
        a, n = self.cfg.algo, self.cfg.llm.reward.batch_size
        prefs = demos = samples = None
        if a.pref_weight != 0:
            prefs = [self.reward_data["prefs"][i] for i in self.draw("prefs", n)]
        if a.demo_weight != 0:
            idx = self.draw("demos", n)
            demos = [self.reward_data["demos"][i] for i in idx]
            samples = self.sample(self.policy, [self.data["demos"][i]["prompt"] for i in idx])
        loss, metrics = self.reward_objective(demos, samples, prefs)
        self._step(1, loss, None)
        self.reward_updates += 1
        return metrics

    def rl_step(self) -> dict:
        """RLOO: k samples per prompt; advantage = R_i − mean of the other k−1; R = r_φ − β·log π/π_ref."""
        t, beta = self.cfg.llm.train, self.cfg.algo.beta
        pool = self.data["demos"] + self.data["prefs"]
        idx = self.draw("rl_pool", t.rl_prompts)
        prompts = [pool[i]["prompt"] for i in idx for _ in range(t.rl_samples)]
        responses = self.sample(self.policy, prompts)
        logp, n = self.repeated_logps(self.policy, prompts, responses, t.rl_samples)
        with torch.no_grad():
            ref_logp, _ = self.repeated_logps(self.fixed_reference, prompts, responses, t.rl_samples)
            reward_prompts = [self.reward_data_prompt(i) for i in idx for _ in range(t.rl_samples)]
            r = self.score(reward_prompts, self.to_reward_ids(responses))
            kl = logp.detach() - ref_logp
            total = (r - beta * kl).view(t.rl_prompts, t.rl_samples)
            baseline = (total.sum(1, keepdim=True) - total) / (t.rl_samples - 1)
            adv = (total - baseline).view(-1)
        loss = -(adv * logp).mean()
        self._step(0, loss, self.cfg.llm.policy.grad_clip)
        return {"loss/policy": loss, "rl/reward": r.mean(), "rl/kl": kl.mean(), "rl/response_tokens": n.float().mean()}

    def reward_data_prompt(self, pool_index: int) -> list[int]:
        nd = len(self.data["demos"])
        if pool_index < nd:
            return self.reward_data["demos"][pool_index]["prompt"]
        return self.reward_data["prefs"][pool_index - nd]["prompt"]

    def reference_table(self) -> ReferenceLogps | None:
        """π_ref's log-probs of the training and held-out pairs, computed once π_ref is frozen (None when live)."""
        t = self.cfg.llm.train
        if t.reference_logps != "precomputed" or not self.reference_frozen:
            return None
        if self.ref_table is None:
            parts = {p: self.data[p] for p in ("prefs", "heldout_prefs") if self.data[p]}
            settings = {"pad": self.tokenizer.pad_token_id,
                        "precision": str(self.trainer.precision) if self._trainer is not None else "32-true"}

            def compute(prompts, chosen, rejected):
                return self.pair_logps(self.fixed_reference, prompts, chosen, rejected)[0]
            self.ref_table = ReferenceLogps.build(compute, self.fixed_reference, parts, settings, t.eval_batch_size,
                                                  resolve_dir(t.reference_cache_dir), self._is_global_zero())
        return self.ref_table

    def direct_step(self) -> dict:
        a, n = self.cfg.algo, self.cfg.llm.train.batch_size
        ref = None
        if a.pref_weight != 0:
            idx = self.draw("prefs", n)
            prefs = [self.data["prefs"][i] for i in idx]
            table = self.reference_table()
            ref = table.pairs("prefs", idx, self.device) if table is not None else None
        else:
            prefs = None
        demos = selfplay = None
        if a.demo_weight != 0:
            demos = [self.data["demos"][i] for i in self.draw("demos", n)]
            if a.demo_term == "selfplay":
                selfplay = self.sample(self.reference, [d["prompt"] for d in demos])
        loss, metrics = self.implicit_objective(demos, prefs, selfplay, ref)
        self._step(0, loss, self.cfg.llm.policy.grad_clip)
        return metrics

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

    # -- evaluation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        t, beta = self.cfg.llm.train, self.cfg.algo.beta
        out: dict[str, float] = {}
        anchor = self.fixed_reference
        prompts = self.data["eval_prompts"][:t.eval_prompts]
        texts = self.text["eval_prompts"][:t.eval_prompts]
        bs = t.eval_batch_size
        if prompts and self.trains_policy:
            greedy, sampled, kls, lengths = [], [], [], []
            for s in range(0, len(prompts), bs):
                chunk = prompts[s:s + bs]
                greedy += self.sample(self.policy, chunk, greedy=True)
                rep = [p for p in chunk for _ in range(t.eval_samples)]
                ys = self.sample(self.policy, rep)
                lp, n = self.repeated_logps(self.policy, rep, ys, t.eval_samples)
                rp, _ = self.repeated_logps(anchor, rep, ys, t.eval_samples)
                kls.append(lp - rp)
                lengths.append(n.float())
                sampled += ys
            # KL(π‖π_ref) estimated on π's own samples: E_y~π[log π(y|x) − log π_ref(y|x)]
            out["eval/kl"] = torch.cat(kls).mean().item()
            out["eval/response_tokens"] = torch.cat(lengths).mean().item()
            dec = self.tokenizer.batch_decode
            greedy_txt, sampled_txt = dec(greedy, skip_special_tokens=True), dec(sampled, skip_special_tokens=True)
            if self.gold is not None:
                out["eval/gold_greedy"] = sum(map(self.gold, texts, greedy_txt)) / len(texts)
                rep_txt = [p for p in texts for _ in range(t.eval_samples)]
                out["eval/gold_sampled"] = sum(map(self.gold, rep_txt, sampled_txt)) / len(rep_txt)
            self.samples = [{"step": self.steps_done, "prompt": p, "greedy": g,
                             **({"gold": self.gold(p, g)} if self.gold else {})}
                            for p, g in zip(texts[:t.sample_table_rows], greedy_txt[:t.sample_table_rows])]
        out.update(self.preference_metrics())
        if self.data["heldout_demos"] and self.trains_policy:
            hd = self.data["heldout_demos"]
            total_lp, total_n = 0.0, 0
            for s in range(0, len(hd), bs):
                lp, n = self.logps(self.policy, [d["prompt"] for d in hd[s:s + bs]], [d["response"] for d in hd[s:s + bs]])
                total_lp, total_n = total_lp + lp.sum().item(), total_n + int(n.sum())
            out["eval/demo_logp_per_token"] = total_lp / max(total_n, 1)
        return out

    def preference_metrics(self) -> dict:
        """Held-out accuracy and margin of the explicit reward, or of the implicit one β·log π/π_ref."""
        held = self.data["heldout_prefs"]
        if not held:
            return {}
        bs, beta = self.cfg.llm.train.eval_batch_size, self.cfg.algo.beta
        margins, ref_margins = [], []
        for s in range(0, len(held), bs):
            chunk = held[s:s + bs]
            if self.reward is not None:
                rc = self.reward_data["heldout_prefs"][s:s + bs]
                sc, sr = self.pair_scores([p["prompt"] for p in rc], [p["chosen"] for p in rc],
                                          [p["rejected"] for p in rc])
                m = sc - sr
            else:
                prompts = [p["prompt"] for p in chunk]
                chosen, rejected = [p["chosen"] for p in chunk], [p["rejected"] for p in chunk]
                (pc, pr), _ = self.pair_logps(self.policy, prompts, chosen, rejected)
                table = self.reference_table()
                if table is not None:
                    rc, rr = table.pairs("heldout_prefs", list(range(s, s + len(chunk))), self.device)
                else:
                    (rc, rr), _ = self.pair_logps(self.fixed_reference, prompts, chosen, rejected)
                m = beta * ((pc - rc) - (pr - rr))
                ref_margins.append((rc - rr).float())
            margins.append(m.float())
        m = torch.cat(margins)
        # A tie (e.g. the implicit reward before any preference step, where π = π_ref) counts as half right.
        acc = ((m > 0).float() + 0.5 * (m == 0).float()).mean().item()
        # What knowing only the lengths scores: the longer response predicted preferred (ties half).
        gap = torch.tensor([len(p["chosen"]) - len(p["rejected"]) for p in held], dtype=torch.float32)
        longer = (gap > 0).float() + 0.5 * (gap == 0).float()
        out = {"eval/pref_accuracy": acc, "eval/reward_margin": m.mean().item(),
               "baseline/length_pref_accuracy": longer.mean().item()}
        if ref_margins:  # a zero-shot baseline: does π_ref itself find the chosen response more likely?
            out["eval/ref_loglik_pref_accuracy"] = (torch.cat(ref_margins) > 0).float().mean().item()
        return out

    def evaluate_and_log(self) -> dict:
        # Evaluation samples from its own stream, a function of (seed, step): the evaluation schedule never changes
        # what training samples, and an evaluation is the same whenever (and in whichever run) it is repeated.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.steps_done)
            out = self.evaluate()
        self.check_finite(out)
        out["time/wall_s"] = time.perf_counter() - self._t0
        self._log(out, self.steps_done)
        self._log_samples()
        self.history.append({"step": self.steps_done, **out})
        return out

    def _log_samples(self) -> None:
        if not self.samples:
            return
        cols = list(self.samples[0])
        rows = [[r[c] for c in cols] for r in self.samples]
        markdown = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                             ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in r) + " |"
                              for r in rows])
        for logger in self.loggers:
            if hasattr(logger, "log_text"):  # wandb: a table per evaluation
                logger.log_text(key="samples", columns=cols, data=rows, step=self.steps_done)
            elif hasattr(getattr(logger, "experiment", None), "add_text"):  # tensorboard
                logger.experiment.add_text("samples", markdown, self.steps_done)
        if not self._is_global_zero():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "samples.jsonl", "a") as fh:
            for r in self.samples:
                fh.write(json.dumps(r) + "\n")

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
            (self.run_dir / "metrics.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
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
            (self.run_dir / "metrics.json").write_text(json.dumps(json_safe(self.final_metrics), indent=2,
                                                                  allow_nan=False))

    def finish(self) -> None:
        """The final evaluation and the run's results."""
        final = self.evaluate_and_log()
        a, d = self.cfg.algo, self.cfg.llm.data
        self.final_metrics = {
            "domain": "llm", "task": d.name, "algo": a.name, "seed": self.cfg.seed, "weighting": a.weighting,
            # the data the preset learns from (an SFT or SPIN run records no preference pairs)
            "beta": a.beta, "num_demos": len(self.data["demos"]),
            "num_prefs": len(self.data["prefs"]) if a.pref_weight != 0 and a.policy_update != "bc" else 0,
            "demo_weight": a.demo_weight, "pref_weight": a.pref_weight, "git_commit": git_commit(),
            "steps": self.steps_done, "sft_updates": self.sft_updates, "reward_updates": self.reward_updates,
            "policy_updates": self.policy_updates, "skipped_updates": self.skipped_updates,
            "heldout_rows_with_training_prompts_dropped": self.dropped_overlap, **final,
            "samples": self.samples, "history": self.history,
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
        saved = s.get("reference_logps")
        self.ref_table = None if saved is None else ReferenceLogps(saved["table"], saved["key"])
