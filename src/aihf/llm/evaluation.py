"""Evaluation of the LLM loop, as one mixin of `LLMAIHF`: gold reward and KL of greedy and sampled responses,
held-out likelihood, held-out preference accuracy (explicit or implicit reward) beside a length-only baseline, and
the samples table."""

from __future__ import annotations

import hashlib
import json
import time

import torch


def _accuracy(margins: torch.Tensor) -> float:
    """The fraction of pairs a margin ranks right; a tie (e.g. the implicit reward while π = π_ref) counts half."""
    return ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()


def _se(x: torch.Tensor) -> float:
    return (x.std() / x.numel() ** 0.5).item()


def pair_id(row: dict) -> str:
    """A held-out pair's identity across runs and splits: a hash of its prompt, chosen and rejected text."""
    text = json.dumps([row["prompt"], row["chosen"], row["rejected"]], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Evaluation:
    @torch.no_grad()
    def evaluate(self) -> dict:
        t = self.cfg.llm.train
        out: dict[str, float] = {}
        prompts = self.data["eval_prompts"][:t.eval_prompts]
        texts = self.text["eval_prompts"][:t.eval_prompts]
        bs = t.eval_batch_size
        if prompts and self.trains_policy:
            greedy, sampled, kls, lengths = [], [], [], []
            # greedy responses feed the gold reward and the samples table only: without a gold reward (real data),
            # only the table's prompts are decoded (greedy decoding draws no random numbers: sampling is unchanged)
            n_greedy = len(prompts) if self.gold is not None else min(t.sample_table_rows, len(prompts))
            for s in range(0, len(prompts), bs):
                chunk = prompts[s:s + bs]
                if s < n_greedy:
                    greedy += self.sample(self.policy, chunk[:n_greedy - s], greedy=True)
                rep = [p for p in chunk for _ in range(t.eval_samples)]
                ys = self.sample(self.policy, rep)
                lp, n = self.repeated_logps(self.policy, rep, ys, t.eval_samples)
                rp, _ = self.repeated_logps(self.fixed_reference, rep, ys, t.eval_samples)
                kls.append(lp - rp)
                lengths.append(n.float())
                sampled += ys
            # KL(π‖π_ref) estimated on π's own samples: E_y~π[log π(y|x) − log π_ref(y|x)], per sequence and per
            # token, each with its standard error over the samples
            kl, n = torch.cat(kls).double(), torch.cat(lengths).double()
            per_token = kl / n.clamp(min=1)
            out["eval/kl"], out["eval/kl_per_token"] = kl.mean().item(), per_token.mean().item()
            if kl.numel() > 1:
                out["eval/kl_se"], out["eval/kl_per_token_se"] = _se(kl), _se(per_token)
            out["eval/kl_samples"] = float(kl.numel())
            out["eval/response_tokens"] = n.mean().item()
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
        """Held-out accuracy and margin of the explicit reward, or of the implicit one β·log π/π_ref, beside a
        length-only baseline and π_ref's zero-shot ranking (log π_ref(chosen) > log π_ref(rejected), for every run
        with a policy); each pair's outcome is kept in `pair_outcomes` for paired comparisons between runs."""
        held = self.data["heldout_prefs"]
        if not held:
            return {}
        bs, beta = self.cfg.llm.train.eval_batch_size, self.cfg.algo.beta
        margins, ref_margins, ref_per_token = [], [], []
        for s in range(0, len(held), bs):
            chunk = held[s:s + bs]
            prompts = [p["prompt"] for p in chunk]
            chosen, rejected = [p["chosen"] for p in chunk], [p["rejected"] for p in chunk]
            ref = None  # π_ref's (chosen, rejected) log-probs and token counts: its own ranking, the baseline
            if self.reward is not None:
                rows = self.reward_data["heldout_prefs"][s:s + bs]
                sc, sr = self.pair_scores([p["prompt"] for p in rows], [p["chosen"] for p in rows],
                                          [p["rejected"] for p in rows])
                m = sc - sr
                if self.trains_policy:
                    with torch.no_grad():
                        ref = self.pair_logps(self.fixed_reference, prompts, chosen, rejected)
            else:
                (pc, pr), counts = self.pair_logps(self.policy, prompts, chosen, rejected)
                ref = self.reference_pair_logps(chunk, "heldout_prefs", list(range(s, s + len(chunk)))), counts
                (rc, rr), _ = ref
                m = beta * ((pc - rc) - (pr - rr))
            if ref is not None:
                (rc, rr), (nc, nr) = ref
                ref_margins.append((rc - rr).float())
                ref_per_token.append((rc / nc.clamp(min=1) - rr / nr.clamp(min=1)).float())
            margins.append(m.float())
        m = torch.cat(margins)
        sign = self.length_sign()
        gap = self.length_gaps("heldout_prefs")
        out = {"eval/pref_accuracy": _accuracy(m), "eval/reward_margin": m.mean().item(),
               "baseline/length_pref_accuracy": _accuracy(sign * gap), "baseline/length_direction": sign}
        rows = self.text["heldout_prefs"]
        self.pair_outcomes = [{"pair": pair_id(r), "margin": float(x), "length_gap": float(g)}
                              for r, x, g in zip(rows, m.tolist(), gap.tolist())]
        if ref_margins:  # zero-shot baselines: does π_ref itself find the chosen response more likely?
            ref, ref_tok = torch.cat(ref_margins), torch.cat(ref_per_token)
            out["eval/ref_loglik_pref_accuracy"] = _accuracy(ref)
            out["eval/ref_loglik_per_token_pref_accuracy"] = _accuracy(ref_tok)
            for o, x, y in zip(self.pair_outcomes, ref.tolist(), ref_tok.tolist()):
                o.update(ref_margin=x, ref_margin_per_token=y)
        return out

    def length_gaps(self, part: str) -> torch.Tensor:
        """len(chosen) − len(rejected) of each pair of a data part, in policy tokens of the whole response: the
        length a reader sees, not the one left after truncating to llm.data.max_length. Tokenised once per part (the
        texts do not change during a run)."""
        if part not in self.length_gap_cache:
            rows = self.text[part]

            def lengths(key):
                ids = self.tokenizer([r[key] for r in rows], add_special_tokens=False)["input_ids"] if rows else []
                return torch.tensor([len(x) for x in ids], dtype=torch.float32)
            self.length_gap_cache[part] = lengths("chosen") - lengths("rejected")
        return self.length_gap_cache[part]

    def length_sign(self) -> float:
        """The length baseline's rule, fit on the training pairs as a learner could fit it: +1 when the longer
        response is preferred at least half the time there, −1 when the shorter is (HH harmless-base)."""
        gap = self.length_gaps("prefs")
        return 1.0 if gap.numel() == 0 or _accuracy(gap) >= 0.5 else -1.0

    def seeded_evaluate(self) -> dict:
        # Evaluation samples from its own stream, a function of (seed, step): the evaluation schedule never changes
        # what training samples, and an evaluation is the same whenever (and in whichever run) it is repeated.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.steps_done)
            return self.evaluate()

    def evaluate_and_log(self) -> dict:
        out = self.seeded_evaluate()
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
