"""The built-in task: sort a list of digits, scored by a programmatic gold reward.

Why it is a fair offline test of alignment methods (docs/llm.md has the long form):
- the gold reward g(x, y) is known exactly, so alignment quality is measured, not judged by another model;
- it is graded, not pass/fail: partial credit per correct position, a penalty per missing or extra digit;
- a tiny transformer can learn it in minutes on a CPU, yet an untrained model scores below 0 and the
  demonstrator is imperfect (it always swaps the last two of 5 or more digits, and one time in five swaps a random
  pair of neighbours), so the best achievable score (1.0) is above what imitation of the demonstrations can reach
  (its most likely response scores about 0.84), and only the preferences say how to go beyond them;
- preference pairs compare responses of a quality ladder, labelled by the simulated Bradley–Terry teacher of
  docs/design.md §4 on the gold reward (the same teacher class as MuJoCo's), so label noise and scarcity are sweepable.

`python -m aihf.llm.sort_task --out data/llm/sort` writes the shipped files: demos.jsonl, prefs.jsonl,
heldout_prefs.jsonl, heldout_demos.jsonl, eval_prompts.jsonl and meta.json. `python -m aihf.llm.sort_task
--baselines data/llm/sort` prints what trivial and imitation policies score on its evaluation prompts, and how often
its held-out labels agree with the gold reward (the ceiling of a held-out preference accuracy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from aihf.teachers import SimulatedTeacher

PREFIX = "sort"
SEP = "="
MIN_LEN, MAX_LEN = 3, 6
TIRED_AT = 5


def make_prompt(digits: list[int]) -> str:
    return " ".join([PREFIX, *map(str, digits), SEP])


def parse_prompt(prompt: str) -> list[int]:
    tokens = prompt.split()
    return [int(t) for t in tokens[1:-1]]


def gold_reward(prompt: str, response: str) -> float:
    """g(x, y) = (#positions where y agrees with sorted(x)) / n − 0.5 · |len(y) − n| / n, clipped to [−1, 1].

    1.0 only for the exact sort; a non-digit token never matches; an empty response scores −0.5.
    """
    target = sorted(parse_prompt(prompt))
    n = len(target)
    tokens = response.split()
    matches = sum(1 for i, tok in enumerate(tokens[:n]) if tok == str(target[i]))
    score = matches / n - 0.5 * abs(len(tokens) - n) / n
    return float(max(-1.0, min(1.0, score)))


def _swap_adjacent(seq: list[int], rng: np.random.Generator, times: int) -> list[int]:
    seq = list(seq)
    for _ in range(times):
        if len(seq) < 2:
            break
        i = int(rng.integers(len(seq) - 1))
        seq[i], seq[i + 1] = seq[i + 1], seq[i]
    return seq


def expert_response(digits: list[int], rng: np.random.Generator, error_prob: float = 0.2) -> str:
    """A good but imperfect demonstrator, with a systematic and a random error.

    Systematic: on lists of `TIRED_AT` or more digits it swaps the last two (so imitation, even greedy decoding,
    reproduces the mistake and only preferences can correct it). Random: with `error_prob` it also swaps one
    random pair of neighbours.
    """
    out = sorted(digits)
    if len(out) >= TIRED_AT:
        out[-2], out[-1] = out[-1], out[-2]
    if rng.random() < error_prob:
        out = _swap_adjacent(out, rng, 1)
    return " ".join(map(str, out))


def ladder_response(digits: list[int], rng: np.random.Generator) -> str:
    """A response from a random rung of a quality ladder: exact sort, k swaps, the input copied, or wrong length."""
    rung = int(rng.integers(6))
    if rung <= 3:
        out = _swap_adjacent(sorted(digits), rng, rung)
    elif rung == 4:
        out = list(digits)
    else:
        out = sorted(digits)
        if rng.random() < 0.5 and len(out) > 1:
            out.pop(int(rng.integers(len(out))))
        else:
            out.insert(int(rng.integers(len(out) + 1)), int(rng.integers(10)))
    return " ".join(map(str, out))


def random_digits(rng: np.random.Generator) -> list[int]:
    return [int(d) for d in rng.integers(0, 10, size=int(rng.integers(MIN_LEN, MAX_LEN + 1)))]


def unseen_digits(rng: np.random.Generator, seen: set[str]) -> list[int]:
    """A random list whose prompt is not in `seen` (held-out prompts are never training prompts)."""
    while True:
        digits = random_digits(rng)
        if make_prompt(digits) not in seen:
            return digits


def make_pairs(num: int, teacher: SimulatedTeacher, rng: np.random.Generator,
               seen: set[str] = frozenset()) -> list[dict]:
    pairs = []
    while len(pairs) < num:
        digits = unseen_digits(rng, seen)
        prompt = make_prompt(digits)
        a, b = ladder_response(digits, rng), ladder_response(digits, rng)
        ga, gb = gold_reward(prompt, a), gold_reward(prompt, b)
        if a == b or ga == gb:
            continue  # no information either way; the teacher would answer "equal"
        label = teacher.label(ga, gb, rng)
        if label == 0.5:
            continue
        chosen, rejected = (a, b) if label == 1.0 else (b, a)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                      "gold_chosen": gold_reward(prompt, chosen), "gold_rejected": gold_reward(prompt, rejected)})
    return pairs


def build(out: Path, seed: int = 0, num_demos: int = 1000, num_prefs: int = 2000, num_heldout_prefs: int = 300,
          num_heldout_demos: int = 200, num_eval_prompts: int = 200, error_prob: float = 0.2,
          teacher: SimulatedTeacher | None = None) -> dict:
    teacher = teacher or SimulatedTeacher(beta=1.0, return_scale=10.0)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; the task data is never overwritten")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def demos(n, seen=frozenset()):
        rows = []
        for _ in range(n):
            digits = unseen_digits(rng, seen)
            prompt = make_prompt(digits)
            response = expert_response(digits, rng, error_prob)
            rows.append({"prompt": prompt, "response": response, "gold": gold_reward(prompt, response)})
        return rows

    files = {"demos": demos(num_demos), "prefs": make_pairs(num_prefs, teacher, rng)}
    # Held-out rows and evaluation prompts are drawn from the lists no training row asks about (so slightly fewer
    # short lists: most of the 1,000 three-digit lists are already training prompts).
    seen = {r["prompt"] for rows in files.values() for r in rows}
    files.update({"heldout_demos": demos(num_heldout_demos, seen),
                  "heldout_prefs": make_pairs(num_heldout_prefs, teacher, rng, seen),
                  "eval_prompts": [{"prompt": make_prompt(unseen_digits(rng, seen))} for _ in range(num_eval_prompts)]})
    for name, rows in files.items():
        with open(out / f"{name}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    pref_agree = np.mean([p["gold_chosen"] > p["gold_rejected"] for p in files["prefs"]])
    meta = {"task": "sort", "generator": "aihf.llm.sort_task", "seed": seed, "lengths": [MIN_LEN, MAX_LEN],
            "expert_error_prob": error_prob, "expert_swaps_last_two_from_length": TIRED_AT, "teacher": teacher.to_dict(),
            "expert_gold": float(np.mean([d["gold"] for d in files["demos"]])),
            "best_gold": 1.0, "pref_label_agrees_with_gold": float(pref_agree),
            "counts": {k: len(v) for k, v in files.items()}, "heldout_prompts_disjoint_from_training": True}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def baselines(data: Path, draws: int = 100, seed: int = 0) -> dict:
    """Mean gold reward on the evaluation prompts of policies that need no learning from preferences: copying the
    prompt's digits, the demonstrator (sampled, averaged over `draws` draws per prompt), its most likely response
    (the systematic swap, no random error: what perfect imitation decodes greedily) and the exact sort; and the share
    of held-out pairs whose label agrees with the gold reward."""
    prompts = [json.loads(line)["prompt"] for line in (data / "eval_prompts.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (data / "heldout_prefs.jsonl").read_text().splitlines()]
    meta = json.loads((data / "meta.json").read_text())
    rng = np.random.default_rng(seed)
    mean = lambda respond: float(np.mean([gold_reward(p, respond(parse_prompt(p))) for p in prompts]))  # noqa: E731
    return {"prompts": len(prompts), "copy_prompt": mean(lambda d: " ".join(map(str, d))),
            "demonstrator_sampled": float(np.mean([mean(lambda d: expert_response(d, rng, meta["expert_error_prob"]))
                                                   for _ in range(draws)])),
            "demonstrator_mode": mean(lambda d: expert_response(d, rng, 0.0)),
            "exact_sort": mean(lambda d: " ".join(map(str, sorted(d)))),
            "heldout_labels_agreeing_with_gold": float(np.mean([gold_reward(p["prompt"], p["chosen"])
                                                                > gold_reward(p["prompt"], p["rejected"])
                                                                for p in held]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baselines", type=Path, help="a sort task folder: print its baselines, write nothing")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-demos", type=int, default=1000)
    parser.add_argument("--num-prefs", type=int, default=2000)
    args = parser.parse_args()
    if args.baselines:
        print(json.dumps(baselines(args.baselines), indent=2))
    elif args.out:
        print(json.dumps(build(args.out, args.seed, args.num_demos, args.num_prefs), indent=2))
    else:
        parser.error("give --out (build the task) or --baselines (score trivial policies on a built one)")


if __name__ == "__main__":
    main()
