"""The update rules of the LLM loop, as one mixin of `LLMAIHF`: the objectives on given batches (the reductions are
tested on these) and the steps that draw a batch, compute one objective and take one optimiser step.

- `sft_step`: NLL on demonstrations (the warm start, and the `bc` policy update);
- `reward_step`: the explicit reward, λ_D·log σ(r(x, y^E) − r(x, y^π)) + λ_P·BT(P), with y^π a fresh sample;
- `rl_step`: RLOO on r_φ − β·log π/π_ref;
- `direct_step`: the implicit reward, λ_D·(NLL or SPIN) + λ_P·(DPO/IPO) (+ RPO's NLL).
"""

from __future__ import annotations

import gc
import logging

import torch

from aihf import objectives
from aihf.llm.models import is_lora
from aihf.llm.reference_cache import ReferenceLogps
from aihf.nonfinite import grad_norm
from aihf.paths import resolve_dir

log = logging.getLogger("aihf.llm.module")


def _return_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim): most of a model's tensors are below malloc's
    mmap threshold, so freeing them leaves the pages resident, and the peak as high as if they were still held."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the memory is reused, not returned
        pass


class UpdateRules:
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
            rc, rr = ref_prefs if ref_prefs is not None else self.reference_pair_logps(prefs)
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
        opt.zero_grad()  # freed now, not at the next backward: else they stay resident through the next forward

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
        self._step(1, loss, self.cfg.llm.reward.grad_clip)
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
            settings = {"pad": self.tokenizer.pad_token_id, "built_by": self.cfg.llm.reference._target_,
                        "precision": str(self.trainer.precision) if self._trainer is not None else "32-true"}

            def compute(prompts, chosen, rejected):
                return self.pair_logps(self.fixed_reference, prompts, chosen, rejected)[0]
            self.ref_table = ReferenceLogps.build(compute, self.fixed_reference, parts, settings, t.eval_batch_size,
                                                  resolve_dir(t.reference_cache_dir), self._is_global_zero())
            self.release_reference()
        return self.ref_table

    def reference_needed_live(self) -> bool:
        """Whether anything but the pairs' log-probs reads π_ref: RLOO's KL, self-play's and SPIN's opponent, a
        refreshed opponent, the evaluation's KL on sampled responses."""
        a, t = self.cfg.algo, self.cfg.llm.train
        samples_at_evaluation = bool(self.data["eval_prompts"]) and t.eval_prompts > 0 and self.trains_policy
        return (a.policy_update != "direct" or a.reference_refresh_every > 0 or self.anchor is not None
                or (a.demo_weight != 0 and a.demo_term == "selfplay") or samples_at_evaluation)

    def release_reference(self) -> None:
        """With π_ref's log-probs of every pair in the table and nothing else reading π_ref, its frozen copy is
        let go (as TRL drops its reference model after precomputing), and it is not in later checkpoints. A LoRA
        policy's reference holds no weights of its own: nothing to release."""
        if self.reference is not None and not is_lora(self.policy) and not self.reference_needed_live():
            self.reference = None
            gc.collect()  # its taught forward (sequences.fused_head) is a bound method: a cycle, freed by gc only
            _return_freed_memory()

    def reference_pair_logps(self, rows: list[dict], part: str | None = None, idx: list[int] | None = None):
        """π_ref's (chosen, rejected) log-probs of pairs: from the precomputed table when there is one and the rows
        are rows `idx` of data part `part`, else by a forward pass of π_ref."""
        table = self.reference_table() if part is not None else None
        if table is not None:
            return table.pairs(part, idx, self.device)
        with torch.no_grad():
            return self.pair_logps(self.fixed_reference, [p["prompt"] for p in rows], [p["chosen"] for p in rows],
                                   [p["rejected"] for p in rows])[0]

    def direct_step(self) -> dict:
        a, n = self.cfg.algo, self.cfg.llm.train.batch_size
        prefs = ref = None
        if a.pref_weight != 0:
            idx = self.draw("prefs", n)
            prefs = [self.data["prefs"][i] for i in idx]
            ref = self.reference_pair_logps(prefs, "prefs", idx)
        demos = selfplay = None
        if a.demo_weight != 0:
            demos = [self.data["demos"][i] for i in self.draw("demos", n)]
            if a.demo_term == "selfplay":
                selfplay = self.sample(self.reference, [d["prompt"] for d in demos])
        loss, metrics = self.implicit_objective(demos, prefs, selfplay, ref)
        self._step(0, loss, self.cfg.llm.policy.grad_clip)
        return metrics
