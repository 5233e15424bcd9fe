"""The data mix of the LLM domain: which demonstrations, preference pairs, held-out rows and evaluation prompts a
run reads (llm.data), the held-out split by prompt, the rule that no held-out prompt is a training prompt, and the
encoding of every part into token ids."""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np

from aihf.checks import overridden_keys
from aihf.errors import ConfigError
from aihf.llm import data as llm_data
from aihf.paths import resolve

log = logging.getLogger("aihf.llm.module")


def _shuffled_prompts(pairs: list[dict], seed: int) -> tuple[list[str], Counter]:
    """The distinct prompts in the order the split seed permutes them, and each one's number of pairs."""
    prompts = sorted({p["prompt"] for p in pairs})
    random.Random(seed).shuffle(prompts)
    return prompts, Counter(p["prompt"] for p in pairs)


def split_by_prompt(pairs: list[dict], fraction: float, cap: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A held-out split by prompt, fixed by its own seed (llm.data.split_seed, not the run's): every pair of a
    prompt falls on one side, so no held-out prompt is also a training prompt. About `fraction` of the pairs (at
    most `cap`) are held out."""
    prompts, counts = _shuffled_prompts(pairs, seed)
    target, held, chosen = min(cap, int(round(len(pairs) * fraction))), 0, set()
    for prompt in prompts:
        if held >= target:
            break
        if held + counts[prompt] <= cap:
            chosen.add(prompt)
            held += counts[prompt]
    return [p for p in pairs if p["prompt"] in chosen], [p for p in pairs if p["prompt"] not in chosen]


def fold_by_prompt(pairs: list[dict], folds: int, fold: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Fold `fold` of `folds` disjoint folds by prompt as (held out, training): prompts, permuted by `seed`, each go
    to the fold with the fewest pairs so far, so the folds hold about equal numbers of pairs and every pair of a
    prompt is in one fold."""
    prompts, counts = _shuffled_prompts(pairs, seed)
    sizes, chosen = [0] * folds, set()
    for prompt in prompts:
        k = min(range(folds), key=lambda i: (sizes[i], i))
        sizes[k] += counts[prompt]
        if k == fold:
            chosen.add(prompt)
    return [p for p in pairs if p["prompt"] in chosen], [p for p in pairs if p["prompt"] not in chosen]


def drop_seen_prompts(parts: dict, training: list[dict] | None = None) -> dict:
    """Held-out rows and evaluation prompts whose prompt is also a training prompt (of `training`, by default the
    parts' own demos and prefs) are dropped (they would measure memorisation, not generalisation); returns how many
    of each, which the run logs and records."""
    seen = {r["prompt"] for r in (parts["demos"] + parts["prefs"] if training is None else training)}
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


def load_text(cfg, tok, needs_demos: bool, needs_prefs: bool) -> tuple[dict, dict, dict, dict]:
    """The texts of every data part, as llm.data asks (files, held-out split, counts), how many held-out rows were
    dropped for sharing a training prompt, which training rows were drawn (the rule, its seed and the indices per
    part), and the pool they were drawn from (demos, prefs). Chat data needs the tokenizer (its template): `tok`.

    Under llm.data.subset=random what does not depend on the draw is made from the pool: the held-out rows dropped
    for sharing a training prompt (so every draw is evaluated on the same rows) and, in the caller, the corpus a
    tokenizer is trained on (so every draw at one seed starts from the same π_ref). Under `first` both come from
    the drawn rows, as before the key existed."""
    d = cfg.llm.data
    out = {k: [] for k in ("demos", "prefs", "heldout_demos", "heldout_prefs", "eval_prompts")}
    if d.format == "chat" and tok is None:
        return out, {}, {}, {}  # rendered once the tokenizer (with its chat template) exists

    if d.empty_responses not in ("error", "drop"):
        raise ConfigError(f"llm.data.empty_responses={d.empty_responses!r}: expected error or drop")

    def read(key, convert):
        try:
            rows, label = llm_data.load_rows(resolve(d[key]), d.split)
            return convert(rows, d.format, label, tok, d.empty_responses == "drop")
        except ConfigError as exc:
            raise ConfigError(f"llm.data.{key}: {exc}") from None

    asked = overridden_keys()
    subset_seed = cfg.seed if d.subset_seed is None else d.subset_seed
    subset = {"rule": d.subset, "seed": subset_seed if d.subset == "random" else None}
    pool: dict[str, list] = {"demos": [], "prefs": []}

    def take(rows: list, key: str, what: str, stream: int) -> list:
        """llm.data.<key> of the rows (llm.data.subset): a preset's count is a cap, a count set on the command line
        a demand. The chosen rows' indices are recorded."""
        n = d[key]
        if len(rows) < n and f"llm.data.{key}" in asked:
            raise ConfigError(f"llm.data.{key}={n}, but the data holds {len(rows)} {what}")
        if d.subset == "first" or n >= len(rows):
            chosen = list(range(min(n, len(rows))))
        else:  # its own stream of the subset seed per part; a smaller count draws a subset of a larger one's rows
            chosen = sorted(np.random.default_rng([subset_seed, stream]).permutation(len(rows))[:n].tolist())
        subset[key] = chosen
        drawn = [rows[i] for i in chosen]
        pool[key.removeprefix("num_")] = rows if d.subset == "random" else drawn
        return drawn

    if d.prefs:
        prefs = read("prefs", llm_data.to_pairs)
        if d.heldout_prefs:
            out["heldout_prefs"] = read("heldout_prefs", llm_data.to_pairs)[:d.num_heldout]
        elif d.split_folds > 0:
            out["heldout_prefs"], prefs = fold_by_prompt(prefs, d.split_folds, d.split_fold, d.split_seed)
        elif d.heldout_fraction > 0:
            out["heldout_prefs"], prefs = split_by_prompt(prefs, d.heldout_fraction, d.num_heldout, d.split_seed)
        out["prefs"] = take(prefs, "num_prefs", "training preference pairs", 1)
    if d.demos:
        out["demos"] = take(read("demos", llm_data.to_demos), "num_demos", "demonstrations", 0)
    elif d.demos_from_prefs and d.prefs:
        out["demos"] = take([{"prompt": p["prompt"], "response": p["chosen"]} for p in out["prefs"]],
                            "num_demos", "demonstrations (chosen responses of the training pairs)", 0)
        if d.subset == "random":  # drawn from the drawn pairs, whose own pool is every training pair
            pool["demos"] = [{"prompt": p["prompt"], "response": p["chosen"]} for p in pool["prefs"]]
    if d.heldout_demos:
        out["heldout_demos"] = read("heldout_demos", llm_data.to_demos)[:d.num_heldout]
    elif d.demos_from_prefs:
        out["heldout_demos"] = [{"prompt": p["prompt"], "response": p["chosen"]} for p in out["heldout_prefs"]]
    if d.eval_prompts:
        out["eval_prompts"] = read("eval_prompts", llm_data.to_prompts)[:d.num_heldout]
    else:
        out["eval_prompts"] = [r["prompt"] for r in out["heldout_prefs"] or out["heldout_demos"]][:d.num_heldout]
    dropped = drop_seen_prompts(out, pool["demos"] + pool["prefs"])
    if needs_demos and not out["demos"]:
        raise ConfigError(f"algo={cfg.algo.name} needs demonstrations: set llm.data.demos (or "
                          f"llm.data.demos_from_prefs=true) and llm.data.num_demos > 0")
    if needs_prefs and not out["prefs"]:
        raise ConfigError(f"algo={cfg.algo.name} needs preference pairs: set llm.data.prefs and "
                          f"llm.data.num_prefs > 0")
    return out, dropped, subset, pool

def encode(text: dict, enc: llm_data.Encoder, parts=("demos", "heldout_demos", "prefs", "heldout_prefs",
                                                      "eval_prompts")) -> dict:
    """Token ids of each part's texts under the encoder's truncation rule (each row named in its errors)."""
    out = {}
    for part in parts:
        rows = text[part]
        if part == "eval_prompts":
            out[part] = [enc.prompt(p, f"llm.data.{part} row {i + 1}") for i, p in enumerate(rows)]
        elif "demos" in part:
            out[part] = [enc.demo(r, f"llm.data.{part} row {i + 1}") for i, r in enumerate(rows)]
        else:
            out[part] = [enc.pair(r, f"llm.data.{part} row {i + 1}") for i, r in enumerate(rows)]
    return out
