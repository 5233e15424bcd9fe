"""The report groups runs by the configuration they recorded, never by preset names, and gives intervals."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from aihf import report, stats

PRESETS = ("sac", "bc", "irl", "rlhf", "aihf", "sft", "dpo", "ipo", "rpo", "spin", "aihf_dpo", "aihf_selfplay", "rm")


def write_run(root: Path, name: str, algo: str, seed: int, score: float, pref_weight: float = 1.0,
              recipe: str = "cpu_budget", teacher="the dataset's", status: str = "finished",
              num_prefs: int = 20, tricks: tuple = (2000, 0.25)) -> None:
    d = root / name
    d.mkdir(parents=True)
    m = {"env_id": "Hopper-v5", "algo": algo, "seed": seed, "env_steps": 1000, "num_envs": 1, "num_demos": 1,
         "num_prefs": num_prefs, "weighting": "mean", "demo_weight": 1.0, "pref_weight": pref_weight,
         "recipe": {"name": recipe, "beta": 1.0, "bc_warmstart_steps": tricks[0], "demo_replay_fraction": tricks[1]}, "eval/return_mean": 100 * score, "eval/normalised_score": score,
         "eval/epic": 0.4, "eval/pref_accuracy": 0.8, "eval/pref_accuracy_equal_length": 0.7,
         "eval/return_correlation": 0.9, "git_commit": "abc123", "teacher": teacher, "status": status,
         "baselines": {"baseline/constant/pref_accuracy": 0.72, "baseline/length/pref_accuracy": 0.7,
                       "baseline/constant/pref_accuracy_equal_length": 0.5,
                       "baseline/length/pref_accuracy_equal_length": 0.5, "baseline/length/return_correlation": 0.99,
                       "baseline/demo_classifier/pref_accuracy": 0.62, "baseline/demo_classifier/epic": 0.66,
                       "baseline/demo_mlp_classifier/epic": 0.69, "baseline/demo_classifier/epic_lower_rungs": 0.5,
                       "baseline/demo_mlp_classifier/epic_lower_rungs": 0.8},
         "eval/epic_lower_rungs": 0.45,
         "budget": 1000,  # the headline window: evaluations at 800 and after; the one at 200 is the first
         "eval/reward_level_demos": 1.5, "eval/reward_level_agent": 1.5,
         # r_θ at each evaluation: untrained at the first (EPIC 0.65), paying the demonstrations 2, 1, 0 more
         "history": [{"step": 200, "eval/return_mean": 9.0, "eval/normalised_score": 0.9, "eval/epic": 0.65,
                      "eval/epic_lower_rungs": 0.7,
                      "eval/pref_accuracy_equal_length": 0.45, "eval/pref_accuracy": 0.6,
                      "eval/reward_level_demos": 3.0, "eval/reward_level_agent": 1.0},
                     {"step": 800, "eval/return_mean": 1.0, "eval/normalised_score": 0.1,
                      "eval/reward_level_demos": 2.0, "eval/reward_level_agent": 1.0},
                     {"step": 1000, "eval/return_mean": 2.0, "eval/normalised_score": score,
                      "eval/reward_level_demos": 1.5, "eval/reward_level_agent": 1.5}]}
    (d / "metrics.json").write_text(json.dumps(m))


def test_groups_by_recorded_configuration_with_intervals(tmp_path):
    for s in range(4):
        write_run(tmp_path, f"x{s}", "method_x", s, 0.5 + 0.01 * s)
        write_run(tmp_path, f"y{s}", "method_y", s, 0.2 + 0.01 * s)
        write_run(tmp_path, f"z{s}", "method_x", s, 0.9, pref_weight=5.0)  # same name, other weights: its own row
    md = report.table(report.load_runs([tmp_path]))
    main = md.split("Cells:")[0]
    rows = [line for line in main.splitlines() if line.startswith("| method_")]
    assert len(rows) == 3 and all("| 4 (4) |" in r for r in rows)
    assert "shared by all: env = Hopper-v5" in md and "recipe = cpu_budget" in md
    x_row = next(r for r in rows if r.startswith("| method_x | 1.0 |"))
    assert "0.515 [0.494, 0.536] (0.500–0.530)" in x_row  # mean [95 % t-interval] (min–max)
    # the headline: each run's evaluations in the last 20 % of its budget averaged (0.1 at step 800 and its final
    # score; not the 0.9 at step 200), and beside it the first evaluation's score and step
    assert "| 0.307 [0.297, 0.318] (0.300–0.315) |" in x_row
    assert "| 0.900 [0.900, 0.900] (0.900–0.900) (200) |" in x_row
    assert "score, last 20 % of training, row − column, paired by seed (4 seeds)" in md
    # the constant's, the length proxy's and the demonstration classifier's pair accuracy beside the learned one (no
    # policy baseline recorded: –), and the untrained r_θ of the first evaluation beside each reward metric
    assert "(0.720 / 0.700 / – / 0.620 / 0.600)" in x_row and "(0.500 / 0.500 / – / – / 0.450)" in x_row
    # EPIC, then the linear and MLP demonstration classifiers' and the first evaluation's; then on the lower rungs
    assert "(0.400–0.400) (0.660 / 0.690 / 0.650)" in x_row and "(0.450–0.450) (0.500 / 0.800 / 0.700)" in x_row
    header = [c.strip() for c in main.splitlines()[2].strip("|").split("|")]
    cells = [c.strip() for c in x_row.strip("|").split("|")]
    no_demonstrator = next(i for i, h in enumerate(header) if h.startswith("pair acc., equal lengths, no demo"))
    assert cells[no_demonstrator] == "–"  # recorded before the accuracy without the demonstrator's segments existed
    # r_θ on the demonstrations / the agent at the end, and their gap averaged over the evaluations: (2 + 1 + 0) / 3
    assert x_row.endswith("| 1.50 / 1.50 (1.00) |")
    # 4 seeds: the IQM and the probability of improvement without a bootstrap interval, and the table says why
    assert "(0.300–0.315) | 0.307 | 0.515" in x_row
    poi = md.split("Probability of improvement")[1]
    assert "rather than estimating" in poi and "[" not in poi.split("`abc123`")[0]
    assert "Probability of improvement" in md and "`abc123` (12 runs)" in md
    report.plot_curves(report.load_runs([tmp_path]), tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_untrained_reward_cell_says_when_it_averages_fewer_runs_than_its_row(tmp_path):
    """r_θ at the first evaluation is missing where a metric was added after a run and reevaluate could not measure
    the network as initialised: a cell averaging some of the row's runs says how many."""
    for s in range(3):
        write_run(tmp_path, f"x{s}", "method_x", s, 0.5)
    m = json.loads((tmp_path / "x2" / "metrics.json").read_text())
    del m["history"][0]["eval/epic"]  # a metric added since this run, and r_θ as initialised not measured again
    (tmp_path / "x2" / "metrics.json").write_text(json.dumps(m))
    row = next(r for r in report.table(report.load_runs([tmp_path])).splitlines() if r.startswith("| 3 (3) |"))
    assert "(0.660 / 0.690 / 0.650 [2 of 3 runs])" in row  # EPIC: two runs' untrained value, marked
    assert "(0.500 / 0.800 / 0.700)" in row  # lower rungs: every run has it, nothing added
    assert report.plain_counted([None, float("nan")]) == "–"


def test_reward_contrasts_again_with_the_heldout_trajectories_resampled(tmp_path):
    """For each resampling of the held-out trajectories (the same draw in every run), the mean over seeds of the
    paired EPIC difference; the table shows its spread beside the seeds' standard error and the t-interval with
    both. A method without resampled values (the constant control learns no reward) has no row; a run recorded
    before them leaves the section out."""
    from scipy.stats import t as stats_t
    rng = np.random.default_rng(0)
    shared = rng.normal(0.5, 0.05, size=(3, 200))  # what every run's draw r shares at seed s
    values = {}
    for s in range(3):
        for algo, shift in (("method_x", -0.1), ("method_y", 0.0)):
            values[algo, s] = shared[s] + shift + rng.normal(0, 0.01, 200)
            write_run(tmp_path, f"{algo}{s}", algo, s, 0.5)
            f = tmp_path / f"{algo}{s}" / "metrics.json"
            m = json.loads(f.read_text())
            m["heldout_resampled"] = {"epic": values[algo, s].tolist()}
            f.write_text(json.dumps(m))
        write_run(tmp_path, f"c{s}", "constant", s, 0.3)
    md = report.table(report.load_runs([tmp_path]),
                      contrasts=[("method_x", "method_y"), ("method_x", "constant")])
    means = np.mean([values["method_x", s] - values["method_y", s] for s in range(3)], axis=0)
    held_sd = means.std(ddof=1)
    # the recorded EPIC of write_run is 0.4 for every run: no spread over seeds, so the interval is the held-out one
    half = stats_t.ppf(0.975, 2) * held_sd
    section = md.split("Held-out sampling:")[1].split("\n\n")[1]  # its table
    assert (f"| method_x − method_y | {held_sd:.3f} / 0.000 | +0.000 [{-half:+.3f}, {half:+.3f}] (n=3) | – | – |"
            in section)
    assert "constant" not in section and "(200 resamplings" in md
    assert 0.003 < held_sd < 0.01
    for s in range(3):  # recorded before the resamplings existed
        f = tmp_path / f"method_y{s}" / "metrics.json"
        f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "heldout_resampled"}))
    assert "Held-out sampling" not in report.table(report.load_runs([tmp_path]), contrasts=[("method_x", "method_y")])


def test_bootstrap_intervals_are_shown_only_from_ten_seeds():
    """A percentile bootstrap over 5 seeds covers far less than 95 %: the IQM cell has no interval below
    BOOTSTRAP_MIN_SEEDS seeds, and one from there on."""
    assert report.iqm_cell(np.linspace(0.1, 0.9, 9)) == "0.500"
    point, low, high = stats.iqm_ci(np.linspace(0.1, 0.9, 10))
    assert report.iqm_cell(np.linspace(0.1, 0.9, 10)) == f"{point:.3f} [{low:.3f}, {high:.3f}]" and low < point < high


def test_mujoco_scarcity_plot_shows_each_method_against_its_pair_count(tmp_path):
    """Score against pairs: one line per method at the counts it ran, a no-pair method as one level, the score as
    the table's (a diverged seed at 0), and the reward metrics of the finished seeds."""
    for s in range(3):
        for n, score in ((10, 0.2), (100, 0.5)):
            write_run(tmp_path, f"x{n}-{s}", "method_x", s, score + 0.01 * s, num_prefs=n)
            write_run(tmp_path, f"y{n}-{s}", "method_y", s, score / 2, num_prefs=n)
        write_run(tmp_path, f"z{s}", "method_z", s, 0.3, num_prefs=0)
    write_run(tmp_path, "x100-bad", "method_x", 7, float("nan"), num_prefs=100, status="diverged")
    plotted = report.plot_mujoco_scarcity(report.load_runs([tmp_path]), tmp_path / "pairs.png", "test")
    # the table's headline: each run's last evaluations (0.1 at step 800 and its final score) averaged, and the
    # diverged seed at 0: method_x at 100 pairs is ((0.1 + 0.5) + (0.1 + 0.51) + (0.1 + 0.52)) / 2 / 4
    score = plotted["score"]
    assert score["method_x"] == pytest.approx({10: 0.155, 100: (0.3 + 0.305 + 0.31 + 0.0) / 4})
    assert score["method_y"] == pytest.approx({10: 0.1, 100: 0.175}) and score["method_z"] == pytest.approx({0: 0.2})
    assert plotted["eval/pref_accuracy_equal_length"]["method_x"] == pytest.approx({10: 0.7, 100: 0.7})
    assert (tmp_path / "pairs.png").stat().st_size > 0


def test_mujoco_methods_without_pairs_or_recipe_join_every_pair_count_in_paired_contrasts(tmp_path):
    """sac takes no pairs and none of the recipe's tricks, yet it is compared with the presets at each pair count:
    paired by seed (seed s of one method against seed s of the other) and Holm-adjusted over the family."""
    for s in range(4):
        for n, gain in ((10, 0.1), (100, 0.3)):
            write_run(tmp_path, f"a{n}-{s}", "method_a", s, 0.4 + gain + 0.02 * s, num_prefs=n)
        write_run(tmp_path, f"o{s}", "method_o", s, 0.4 + 0.02 * s + 0.01 * (s % 2), num_prefs=0, tricks=(0, 0.0))
    md = report.table(report.load_runs([tmp_path]), contrasts=[("method_a", "method_o")])
    contrasts = md.split("Primary contrasts")[1].split("\n\n")[1].splitlines()
    rows = [r for r in contrasts if "method_a − method_o" in r]
    assert len(rows) == 2 and rows[0].startswith("| pairs = 10 |") and rows[1].startswith("| pairs = 100 |")
    # final score: differences 0.1 − 0.01·(s % 2) per seed → mean 0.095; p and Holm p beside it
    assert "| +0.095 [" in rows[0] and "(n=4)" in rows[0] and "| +0.295 [" in rows[1]
    improvement = md.split("Probability of improvement")[1]
    assert "*pairs = 10*" in improvement and "*pairs = 100*" in improvement
    assert improvement.count("| method_o | 0.00 | – |") == 2
    # a no-pair method run with another budget matches no pair count: it keeps a context of its own, not none
    for s in range(2):
        write_run(tmp_path, f"b{s}", "method_b", s, 0.3, num_prefs=0, tricks=(0, 0.0))
        m = json.loads((tmp_path / f"b{s}" / "metrics.json").read_text())
        (tmp_path / f"b{s}" / "metrics.json").write_text(json.dumps({**m, "budget": 50000}))
    groups, _, _ = report.group(report.load_runs([tmp_path]), report.mujoco_config)
    found = report.contexts(groups, report.METHOD)
    assert [[dict(k)["algo"] for k in keys] for c, keys in found.items() if dict(c)["budget"] == 50000] == \
        [["method_b"]]


def test_an_ablations_contrasts_are_made_within_each_variant_of_the_recipe(tmp_path):
    """With `within` = the recipe's parts, method_a − method_b is made under each recipe variant (paired by seed,
    one Holm family over the variants); without it the variants are four methods and the contrast is ambiguous, so
    none is made. The command line names an unknown setting in one line."""
    gains = {(2000, 0.25): 0.2, (0, 0.25): 0.1, (2000, 0.0): 0.0, (0, 0.0): -0.1}
    for s in range(4):
        for tricks, gain in gains.items():
            base = 0.3 + 0.05 * s + 0.1 * tricks[1]
            write_run(tmp_path, f"a-{tricks[0]}-{tricks[1]}-{s}", "method_a", s, base + gain + 0.01 * (s % 2),
                      tricks=tricks)
            write_run(tmp_path, f"b-{tricks[0]}-{tricks[1]}-{s}", "method_b", s, base, tricks=tricks)
    runs = report.load_runs([tmp_path])
    assert "Primary contrasts" not in report.table(runs, [("method_a", "method_b")])
    md = report.table(runs, [("method_a", "method_b")], within=("BC warm start", "demo replay"))
    rows = [r for r in md.split("Primary contrasts")[1].split("\n\n")[1].splitlines()[2:]]
    assert len(rows) == 4 and "in a family of 4" in md
    for r in rows:
        ws, replay = re.match(r"\| BC warm start = (\d+), demo replay = ([\d.]+) \| method_a − method_b \|", r).groups()
        assert f"| {gains[(int(ws), float(replay))] + 0.005:+.3f} [" in r and "(n=4)" in r
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "aihf.report", str(tmp_path), "--out", str(tmp_path / "r"),
                          "--contrasts", "method_a:method_b", "--within", "recipe"], capture_output=True, text=True)
    assert out.returncode != 0 and "--within=recipe: ['recipe'] are not method settings" in out.stderr
    assert not (tmp_path / "r.md").exists()


def test_conditions_are_never_merged_and_diverged_seeds_are_shown(tmp_path):
    """Runs that differ in a recorded setting that is not the method (here the teacher) are separate rows, and a
    diverged seed is counted and scores the random level: leaving it out would favour the less stable method."""
    for s in range(3):
        write_run(tmp_path, f"clean{s}", "method_x", s, 0.5, teacher={"mistake_prob": 0.0})
        write_run(tmp_path, f"noisy{s}", "method_x", s, 0.3, teacher={"mistake_prob": 0.3})
    write_run(tmp_path, "bad", "method_x", 9, float("nan"), teacher={"mistake_prob": 0.3}, status="diverged")
    md = report.table(report.load_runs([tmp_path]))
    rows = [r for r in md.split("Cells:")[0].splitlines() if r.startswith("| ")][1:]
    assert len(rows) == 2
    noisy = next(r for r in rows if "mistake_prob=0.3" in r)
    # the diverged seed scores 0 (the random policy's level) in the score columns: (3 × 0.3 + 0) / 4 = 0.225 final,
    # (3 × (0.1 + 0.3) / 2 + 0) / 4 = 0.15 over the last evaluations; the true return averages the finished seeds
    assert "| 4 (3) |" in noisy and "| 0.225 [" in noisy and "| 0.150 [" in noisy
    assert "| 30.0 [30.0, 30.0] (30.0–30.0) |" in noisy
    # every run by seed: the diverged one named, not hidden in a mean; EPIC beside each learned reward's score
    per_seed = md.split("Per seed:")[1].split("\n\n")[1].splitlines()
    assert per_seed[0].endswith("| seed 0 | seed 1 | seed 2 | seed 9 |")
    assert next(r for r in per_seed if "mistake_prob=0.3" in r).endswith(
        "| 0.200 (0.400) | 0.200 (0.400) | 0.200 (0.400) | diverged |")


def test_report_code_names_no_preset():
    source = Path(report.__file__).read_text()
    named = [p for p in PRESETS if re.search(rf"[\"']{p}[\"']", source)]
    assert not named, f"report.py names presets {named}: group by recorded configuration instead"


def test_statistics():
    assert stats.probability_of_improvement([2, 3], [1, 1]) == 1.0
    assert stats.probability_of_improvement([1, 2], [1, 2]) == 0.5
    assert stats.iqm([0, 1, 2, 3, 100, 5, 6, 7]) == pytest.approx(np.mean([2, 3, 5, 6]))
    mean, low, high = stats.bootstrap_ci(np.random.default_rng(0).normal(1.0, 0.1, 20))
    assert low < mean < high and high - low < 0.15 and low < 1.0 < high
    assert np.isnan(stats.bootstrap_ci([0.3])[1])  # one seed: no interval


def test_paired_statistics_against_hand_computations():
    d, lo, hi = stats.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])  # differences 1, 0, 0, 1
    half = 3.182446 * np.std([1, 0, 0, 1], ddof=1) / 2  # t(0.975, 3)
    assert (d, lo, hi) == pytest.approx((0.5, 0.5 - half, 0.5 + half), rel=1e-5)
    # Nadeau-Bengio: 3 splits, 400 test and 1600 training items: variance × (1/3 + 1/4)
    m, lo, hi = stats.corrected_resampled_t([0.02, 0.05, -0.01], 400, 1600)
    half = 4.302653 * np.sqrt((1 / 3 + 0.25) * np.var([0.02, 0.05, -0.01], ddof=1))
    assert (m, lo, hi) == pytest.approx((0.02, 0.02 - half, 0.02 + half), rel=1e-5)
    assert stats.wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def write_llm_run(root: Path, name: str, demo_weight: float, seed: int, right: list[int]) -> None:
    """An LLM run whose held-out pair i is ranked right when i is in `right` (10 pairs per split, ids by seed)."""
    d = root / name
    d.mkdir(parents=True)
    pairs = [{"pair": f"s{seed}p{i}", "margin": 1.0 if i in right else -1.0, "length_gap": 0.0} for i in range(10)]
    m = {"domain": "llm", "task": "t", "algo": "method_r", "seed": seed, "weighting": "mean", "beta": 0.1,
         "num_demos": 5, "num_prefs": 40, "demo_weight": demo_weight, "pref_weight": 1.0, "steps": 10,
         "eval/pref_accuracy": len(right) / 10, "baseline/length_pref_accuracy": 0.5, "heldout_pairs": pairs,
         "git_commit": "abc", "history": []}
    (d / "metrics.json").write_text(json.dumps(m))


def test_llm_methods_are_compared_pair_by_pair_on_each_split(tmp_path):
    # seed 0: the joint run gets pairs 0-7 right, the other 0-5: it differs on 2 pairs, both in its favour
    write_llm_run(tmp_path, "a0", 1.0, 0, list(range(8)))
    write_llm_run(tmp_path, "b0", 0.0, 0, list(range(6)))
    write_llm_run(tmp_path, "a1", 1.0, 1, [0, 1, 2, 3, 4])
    write_llm_run(tmp_path, "b1", 0.0, 1, [0, 1, 2, 3, 4, 5, 6])
    md = report.llm_table(report.load_runs([tmp_path]))
    rows = [r for r in md.splitlines() if r.startswith("| 0 |") or r.startswith("| 1 |") or r.startswith("| all")]
    assert len(rows) == 3, md
    assert "λ_D=0.0, demos=5 − λ_D=1.0, demos=5" in md or "λ_D=0.0 − λ_D=1.0" in md  # λ_D 0 first: 0 minus 1
    d0, lo0, hi0 = stats.paired_difference([1] * 6 + [0] * 4, [1] * 8 + [0] * 2)
    assert "| 0 | 10 | 0.600" in rows[0] and f"{d0:+.3f} [{lo0:+.3f}, {hi0:+.3f}] | 2 |" in rows[0]
    pooled = stats.corrected_resampled_t([-0.2, 0.2], 10, 40)
    assert rows[2].startswith("| all 2 |") and f"{pooled[0]:+.3f} [{pooled[1]:+.3f}, {pooled[2]:+.3f}]" in rows[2]
    assert "1 of 2 seeds > 0" in rows[2]
    assert "Commits: `abc` (4 runs)" in md and "Machines" not in md  # no run recorded where it ran
    for name, cpu in (("a1", "CPU A"), ("b1", "CPU B")):
        f = tmp_path / name / "metrics.json"
        f.write_text(json.dumps({**json.loads(f.read_text()),
                                 "platform": {"machine": cpu, "torch": "2.13.0", "transformers": "5.0"}}))
    assert ("Machines: unrecorded (2 runs), CPU A; torch 2.13.0, transformers 5.0 (1 runs), CPU B; torch 2.13.0, "
            "transformers 5.0 (1 runs)") in report.llm_table(report.load_runs([tmp_path]))
    m = json.loads((tmp_path / "a0" / "metrics.json").read_text())
    (tmp_path / "a0" / "metrics.json").write_text(json.dumps({**m, "reevaluation": {"git_commit": "def"}}))
    assert "evaluated again from their last checkpoints at `def` (1 runs)" in report.llm_table(
        report.load_runs([tmp_path]))
    report.plot_llm_accuracy(report.load_runs([tmp_path]), tmp_path / "acc.png", "test")
    assert (tmp_path / "acc.png").stat().st_size > 0


def write_gold_run(root: Path, algo: str, pairs: int, seed: int, gold: float, steps: int = 10, acc: float = 0.5,
                   **extra) -> None:
    d = root / f"{algo}-{pairs}-{seed}" if "beta" not in extra else root / f"{algo}-{pairs}-{seed}-b{extra['beta']}"
    d.mkdir(parents=True)
    m = {"domain": "llm", "task": "t", "algo": algo, "seed": seed, "weighting": "mean", "beta": 0.1, "num_demos": 5,
         "num_prefs": pairs, "demo_weight": 1.0, "pref_weight": 1.0 if pairs else 0.0, "steps": steps,
         "eval/gold_sampled": gold, "eval/pref_accuracy": acc, "git_commit": "abc", "history": [],
         "data_subset": {"rule": "random", "seed": seed}, **extra}
    (d / "metrics.json").write_text(json.dumps(m))


def test_llm_methods_are_compared_within_each_pair_count_paired_by_seed(tmp_path):
    """Methods are compared within one pair count (their own step counts do not split them), paired by seed; a
    method that uses no pairs is compared at every count."""
    base = {0: 0.2, 1: 0.9, 2: 0.5}  # large differences between seeds, which pairing removes
    for seed, b in base.items():
        for pairs in (10, 100):
            write_gold_run(tmp_path, "method_x", pairs, seed, b + 0.10 + 0.01 * seed, steps=30)
            write_gold_run(tmp_path, "method_y", pairs, seed, b, steps=20)
        write_gold_run(tmp_path, "method_z", 0, seed, b - 0.05, steps=20)
    md = report.llm_table(report.load_runs([tmp_path]))
    for pairs in (10, 100):
        block = md.split(f"*pairs = {pairs}: gold reward of sampled responses")[1].split("*pairs")[0]
        row = next(r for r in block.splitlines() if r.startswith("| method_x |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        names = [c.strip() for c in block.splitlines()[2].strip("|").split("|")][1:]
        assert names == ["method_x", "method_y", "method_z"]
        d, lo, hi = stats.t_interval([0.10, 0.11, 0.12])
        assert cells[1] == f"**{d:+.3f} [{lo:+.3f}, {hi:+.3f}]**"  # paired: a tight interval around +0.11
        d, lo, hi = stats.t_interval([0.15, 0.16, 0.17])
        assert cells[2] == f"**{d:+.3f} [{lo:+.3f}, {hi:+.3f}]**"
    assert "*pairs = 0" not in md
    report.plot_llm_scarcity(report.load_runs([tmp_path]), tmp_path / "pairs.png", "test")
    assert (tmp_path / "pairs.png").stat().st_size > 0


def test_llm_table_by_pair_count_has_a_column_per_count(tmp_path):
    """Each measure again with a column per pair count: a row per method (named by its algo, whatever its step
    count), a method trained on no pairs as one value in the first column, and the accuracy above π_ref's own
    ranking paired by seed, in bold where its interval excludes 0."""
    for seed in range(3):
        for pairs in (10, 100):
            write_gold_run(tmp_path, "method_x", pairs, seed, 0.5 + 0.1 * seed + pairs / 1000, steps=30,
                           acc=0.70 + 0.01 * seed, **{"eval/ref_loglik_pref_accuracy": 0.60 + 0.01 * seed})
        write_gold_run(tmp_path, "method_z", 0, seed, 0.3 + 0.01 * seed, steps=20)
    md = report.llm_table(report.load_runs([tmp_path]))
    gold = md.split("Gold reward of sampled responses:")[1].split("\n\n")[1].splitlines()
    assert gold[0] == "| method | N = 10 | N = 100 |"
    d10, lo10, hi10 = stats.t_interval([0.51, 0.61, 0.71])
    d100, lo100, hi100 = stats.t_interval([0.6, 0.7, 0.8])
    assert gold[2] == (f"| `method_x` | {d10:.3f} [{lo10:.3f}, {hi10:.3f}] | {d100:.3f} [{lo100:.3f}, {hi100:.3f}] |")
    dz, loz, hiz = stats.t_interval([0.30, 0.31, 0.32])
    assert gold[3] == f"| `method_z` (no pairs) | {dz:.3f} [{loz:.3f}, {hiz:.3f}] |  |"
    above = md.split("minus π_ref's zero-shot ranking")[1].split("\n\n")[1].splitlines()
    assert above[2].startswith("| `method_x` | **0.100") and len(above) == 3  # method_z: no accuracy recorded
    assert "Gold reward of the greedy response" not in md  # no run recorded it


def test_where_keeps_the_runs_whose_recorded_settings_match(tmp_path):
    """`--where` narrows a report to part of its roots by recorded settings (numbers by value), and names what is
    wrong with a setting that is not a column, a malformed item, or a selection that matches nothing."""
    for seed in range(2):
        for pairs in (10, 100, 300):
            for beta in (0.1, 1.0):
                write_gold_run(tmp_path, "method_x", pairs, seed, 0.5, beta=beta)
        write_gold_run(tmp_path, "method_y", 10, seed, 0.4)
        write_gold_run(tmp_path, "method_z", 0, seed, 0.3)
    runs = report.load_runs([tmp_path])
    kept = report.select(runs, report.parse_where(["pairs=10,100", "β=1", "algo=method_x"]))
    assert sorted((m["num_prefs"], m["beta"], m["seed"]) for m in kept) == [(p, 1.0, s) for p in (10, 100)
                                                                             for s in range(2)]
    kept = report.select(runs, report.parse_where(["algo=method_y,method_z"]))
    assert sorted(Path(m["_path"]).name for m in kept) == ["method_y-10-0", "method_y-10-1", "method_z-0-0",
                                                           "method_z-0-1"]
    assert report.select(runs, {}) == runs
    groups, varying, _ = report.group(report.select(runs, report.parse_where(["pairs=0,10,100"])), report.llm_config)
    names = [r.split(" |")[0] for r in report.by_pair_count(groups, varying).split("\n\n")[2].splitlines()[2:]]
    # a row is named by what tells it from its algo's other rows (β), not by what differs between algos (λ_P)
    assert names == ["| `method_x`, β=0.1", "| `method_x`, β=1.0", "| `method_y`", "| `method_z` (no pairs)"]
    with pytest.raises(SystemExit, match=r"\['beta'\] are not settings of the llm runs"):
        report.select(runs, report.parse_where(["beta=1"]))
    with pytest.raises(SystemExit, match="expected SETTING=V1,V2"):
        report.parse_where(["pairs"])
    with pytest.raises(SystemExit, match="no run matches"):
        report.select(runs, report.parse_where(["pairs=30"]))


def test_a_figure_that_borrows_anothers_runs_reports_them_narrowed(tmp_path):
    """llm_sort_beta makes only β ≠ 0.1; its report reads llm_sort's runs in the same root for β = 0.1 and π_ref,
    narrowed by --where to the presets and pair counts it varies."""
    from aihf import figures
    own = dict(figures.planned_sweeps("llm_sort_beta"))
    assert sorted(own) == [f"beta-s{s}" for s in range(5)]
    assert sum(figures.jobs_in(o) for o in own.values()) == figures.FIGURES["llm_sort_beta"].runs == 60
    cmd = figures.report_command("llm_sort_beta", tmp_path)
    sources = cmd[3:cmd.index("--out")]
    assert sorted(sources) == sorted(str(tmp_path / sub) for fig in ("llm_sort_beta", "llm_sort")
                                     for sub, _ in figures.planned_sweeps(fig))
    where = report.parse_where([cmd[i + 1] for i, a in enumerate(cmd) if a == "--where"])
    assert where == {"algo": {"dpo", "rlhf", "aihf", "reference"}, "pairs": {"0", "30", "100"}}
    assert "--where" not in figures.report_command("llm_sort", tmp_path)


def test_heldout_accuracy_contrasts_again_with_the_heldout_pairs_resampled(tmp_path):
    """Every run is scored on the same held-out pairs: the pairs' variance of the seed-mean difference is that of the
    per-pair mean difference over pairs / their count (an exact bootstrap of the pairs, seeds fixed), added to the
    seeds' in one t-interval; π_ref's ranking of the same pairs (ref_margin) is compared the same way."""
    margins_a = {0: [1, 1, -1, 1], 1: [1, -1, 1, 1], 2: [1, 1, 1, 0]}  # tie (0) is half a pair right
    margins_b = {0: [1, -1, -1, -1], 1: [-1, -1, 1, 1], 2: [1, -1, -1, 0]}
    ref = [1, 1, -1, -1]
    for algo, margins in (("method_a", margins_a), ("method_b", margins_b)):
        for seed, ms in margins.items():
            pairs = [{"pair": f"p{i}", "margin": float(m), "ref_margin": float(r)} for i, (m, r) in enumerate(zip(ms, ref))]
            credit = [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in ms]
            write_gold_run(tmp_path, algo, 10, seed, 0.5, acc=float(np.mean(credit)), heldout_pairs=pairs)
    groups, varying, _ = report.group(report.load_runs([tmp_path]), report.llm_config)
    credit = lambda ms: np.array([1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in ms])  # noqa: E731
    d = np.array([credit(margins_a[s]) - credit(margins_b[s]) for s in range(3)])  # seeds × pairs
    diffs, pairs_var = report.pair_sampled(report._credits(groups[next(k for k in groups if dict(k)["algo"] == "method_a")]),
                                           report._credits(groups[next(k for k in groups if dict(k)["algo"] == "method_b")]))
    assert diffs == pytest.approx(d.mean(axis=1).tolist())
    per_pair = d.mean(axis=0)  # [1/3, 2/3, 1/3, 1/3]: the mean over seeds for each pair
    assert pairs_var == pytest.approx(np.var(per_pair, ddof=1) / 4)
    assert pairs_var != pytest.approx(np.var(d, ddof=1) / 4)  # not the spread of single runs' pairs
    md = report.llm_heldout_sampling(groups, varying, [("method_a", "method_b")])
    mean, lo, hi = stats.t_interval_with(d.mean(axis=1), pairs_var)
    se = np.sqrt(np.var(d.mean(axis=1), ddof=1) / 3 + pairs_var)
    assert hi - mean == pytest.approx(scipy_stats.t.ppf(0.975, 2) * se)
    p = 2 * scipy_stats.t.sf(mean / se, 2)
    assert stats.t_test_p_with(d.mean(axis=1), pairs_var) == pytest.approx(p)
    row = next(r for r in md.splitlines() if "method_a − method_b" in r)
    assert f"{np.sqrt(pairs_var):.3f} / {np.std(d.mean(axis=1), ddof=1) / np.sqrt(3):.3f}" in row
    assert f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n=3)" in row and f"| {p:.3f} |" in row
    ref_row = next(r for r in md.splitlines() if r.startswith("| 10 | method_a |"))
    r = np.array([credit(margins_a[s]) - credit(ref) for s in range(3)])
    mean, lo, hi = stats.t_interval_with(r.mean(axis=1), np.var(r.mean(axis=0), ddof=1) / 4)
    assert f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n=3)" in ref_row


def test_primary_contrasts_are_paired_by_seed_and_holm_adjusted(tmp_path):
    gold = {"method_x": [0.5, 0.9, 0.1, 0.7, 0.3], "method_y": [0.4, 0.8, 0.0, 0.6, 0.1]}
    for algo, values in gold.items():
        for pairs in (10, 100):
            for seed, g in enumerate(values):
                write_gold_run(tmp_path, algo, pairs, seed, g + (0.05 if pairs == 100 else 0.0), acc=0.6 + 0.01 * seed,
                               git_commit_resumed="def" if seed == 4 else None)
    for seed in range(5):
        write_gold_run(tmp_path, "method_z", 0, seed, 0.2)
    md = report.llm_table(report.load_runs([tmp_path]), [("method_x", "method_y"), ("method_x", "method_z")])
    rows = [r for r in md.split("Primary contrasts")[1].split("\n\n")[1].splitlines()[2:]]
    assert [r.split(" | ")[:2] for r in rows] == [["| pairs = 10", "method_x − method_y"],
                                                  ["| pairs = 10", "method_x − method_z"],
                                                  ["| pairs = 100", "method_x − method_y"],
                                                  ["| pairs = 100", "method_x − method_z"]]
    diffs = [0.1, 0.1, 0.1, 0.1, 0.2]
    d, lo, hi = stats.t_interval(diffs)
    p = stats.t_test_p(diffs)
    p_z = [stats.t_test_p(np.array(gold["method_x"]) + shift - 0.2) for shift in (0.0, 0.05)]
    holm = stats.holm([p, p_z[0], p, p_z[1]])  # the family: every contrast at every count, in table order
    # beside the t-test's p, the exact sign-flip test's: all 5 differences positive → 2 of the 32 sign patterns
    assert f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] (n=5) | {p:.3f} (0.0625) |" in rows[0] and f"{holm[0]:.3f}" in rows[0]
    assert "| – | – | – | ±0.610 | ±" in rows[1]  # method_z learns from no pairs: no accuracy contrast
    # beside each, the smallest difference Holm's first step could call in this family of 4, at its spread, and the
    # true difference it would find with 80 % power
    assert rows[0].endswith(f"| ±{stats.smallest_significant_difference(diffs, 4):.3f} "
                            f"| ±{stats.difference_for_power(diffs, 4):.3f} |")
    assert "in a family of 4" in md
    assert "*pairs = 10: held-out preference accuracy" in md and "| method_z |" not in md.split(
        "*pairs = 10: held-out preference accuracy")[1].split("*pairs")[0]
    assert md.index("| pairs = 10 |") < md.index("| pairs = 100 |")  # counts in numeric order
    assert "resumed at `def` (4 runs)" in md
    assert "rows drawn = random" in md


def test_the_exact_sign_flip_p_counts_the_sign_patterns_as_extreme_as_the_data():
    """Two-sided, from first principles: every one of the 2^n sign patterns of |d| equally likely under the null;
    p = the share whose mean is at least as far from 0 as the observed one."""
    import itertools
    for d in ([0.1, 0.2, -0.05, 0.3, 0.15], [1.0, 2.0, 3.0], [0.3, -0.1, 0.2, -0.25, 0.05, 0.4]):
        observed = abs(np.mean(d))
        means = [abs(np.mean(np.abs(d) * signs)) for signs in itertools.product((1, -1), repeat=len(d))]
        assert stats.sign_flip_p(d) == pytest.approx(np.mean([m >= observed - 1e-12 for m in means]))
    assert stats.sign_flip_p([0.1, 0.2, 0.3, 0.1, 0.2]) == pytest.approx(2 / 32)  # its floor at 5 values
    assert np.isnan(stats.sign_flip_p([0.1]))


def test_holm_against_a_hand_computation():
    # p = (0.01, 0.04, 0.03, 0.5): sorted 0.01·4 = 0.04, 0.03·3 = 0.09, 0.04·2 = 0.08 → 0.09 (monotone), 0.5·1
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert np.isnan(stats.holm([0.2, float("nan")])[1]) and stats.holm([0.2, float("nan")])[0] == 0.2
    assert stats.t_test_p([0.1, 0.2, 0.3]) == pytest.approx(0.0742, abs=1e-4)


def test_llm_figures_tabulate_their_runs_evaluated_again_at_one_commit(tmp_path):
    from aihf import figures
    root = tmp_path / "hh_dpo"
    for name in ("0-s0/0-dpo-s0", "0-s0/1-aihf_dpo-s0"):
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text("{}")
    (root / "0-s1" / "0-dpo-s1").mkdir(parents=True)  # unfinished: not evaluated
    cmd = figures.reevaluate_command("hh_dpo", root)
    assert cmd[1:3] == ["-m", "aihf.llm.reevaluate"]
    assert cmd[3:5] == [str(root / "0-s0/0-dpo-s0"), str(root / "0-s0/1-aihf_dpo-s0")]
    assert cmd[5:7] == ["--out", str(tmp_path / "hh_dpo-reevaluated")] and "llm.train.eval_prompts=200" in cmd
    assert figures.report_command("hh_dpo", root)[3] == str(tmp_path / "hh_dpo-reevaluated")
    assert figures.reevaluate_command("comparison_hopper", root) is None  # none of its runs in this root
    assert figures.reevaluate_command("study_ratio", root) is None  # no reevaluate step: its root is tabulated
    assert figures.report_command("study_ratio", root)[3] == str(root / "0")


def test_mujoco_comparisons_measure_their_own_runs_again_and_tabulate_those(tmp_path):
    """A MuJoCo comparison shares its root with the figures that share its sweeps: it measures again (into
    <root>-reevaluated, by aihf.mujoco.reevaluate) the finished runs of its own sweeps only, and its report reads
    the measured copies of those sweeps, not the trained runs nor the other figures' copies."""
    import subprocess
    import sys
    from aihf import figures
    root = tmp_path / "hopper"
    for run in ("hopper-pairs-30-s0/0-aihf-s0", "hopper-pairs-30-s0/1-rlhf-s0", "hopper-no-pairs-s0/0-irl-s0",
                "hopper-warm-start-only-s0/0-aihf-s0", "hopper-pairs-300-s0/0-aihf-s0.interrupted-1"):
        (root / run).mkdir(parents=True)
        (root / run / "metrics.json").write_text("{}")
    (root / "hopper-pairs-300-s0" / "1-rlhf-s0").mkdir()  # unfinished
    cmd = figures.reevaluate_command("study_prefs", root)
    assert cmd[1:3] == ["-m", "aihf.mujoco.reevaluate"] and cmd[-2:] == ["--out", str(tmp_path / "hopper-reevaluated")]
    assert cmd[3:-2] == [str(root / r) for r in ("hopper-no-pairs-s0/0-irl-s0", "hopper-pairs-30-s0/0-aihf-s0",
                                                  "hopper-pairs-30-s0/1-rlhf-s0")]
    report_cmd = figures.report_command("study_prefs", root)
    sources = report_cmd[3:report_cmd.index("--out")]
    assert sorted(sources) == sorted(str(tmp_path / "hopper-reevaluated" / sub)
                                     for sub, _ in figures.planned_sweeps("study_prefs"))
    assert figures.reevaluate_command("recipe_ablation", root)[3:-2] == [
        str(root / "hopper-warm-start-only-s0/0-aihf-s0")]
    # --no-train starts no run: it measures and reports; it needs an existing root, and is not --report-only
    def figure(*args):
        return subprocess.run([sys.executable, "-m", "aihf.figures", "run", "study_prefs", *args],
                              capture_output=True, text=True, timeout=120)
    out = figure("--root", str(root), "--no-train", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert [line.split()[1] for line in out.stdout.splitlines()] == ["aihf.mujoco.reevaluate", "aihf.report"]
    out = figure("--root", str(tmp_path / "none"), "--no-train")
    assert out.returncode != 0 and "--no-train: " in out.stderr and not (tmp_path / "none").exists()
    out = figure("--root", str(root), "--no-train", "--report-only")
    assert out.returncode != 0 and "choose one" in out.stderr


def test_a_mujoco_figures_table_holds_only_copies_of_the_runs_in_its_root(tmp_path):
    """The report reads measured copies: a finished run not yet measured is named as left out (--report-only), and
    a copy whose run is gone or was trained again since (its history differs) stops the figure before its report,
    as does a second --no-train measuring the same root."""
    import subprocess
    import sys
    from aihf import figures
    root = tmp_path / "hopper"
    again = figures.reevaluated_root(root)
    for run, history in (("hopper-pairs-30-s0/0-aihf-s0", [1]), ("hopper-pairs-30-s0/1-rlhf-s0", [2]),
                         ("hopper-no-pairs-s0/0-irl-s0", [3])):
        (root / run).mkdir(parents=True)
        (root / run / "metrics.json").write_text(json.dumps({"history": history}))
    for run, history in (("hopper-pairs-30-s0/0-aihf-s0", [1]), ("hopper-pairs-30-s0/1-rlhf-s0", [9]),
                         ("hopper-pairs-300-s0/0-aihf-s0", [4])):
        (again / run).mkdir(parents=True)
        (again / run / "metrics.json").write_text(json.dumps({"history": history, "reevaluation": {}}))
    unmeasured, stale = figures.measured_copies("study_prefs", root)
    assert unmeasured == ["hopper-no-pairs-s0/0-irl-s0"]
    assert sorted(stale) == ["hopper-pairs-30-s0/1-rlhf-s0", "hopper-pairs-300-s0/0-aihf-s0"]
    assert figures.measured_copies("recipe_ablation", root) == ([], [])  # none of its sweeps here

    def figure(*args):
        return subprocess.run([sys.executable, "-m", "aihf.figures", "run", "study_prefs", "--root", str(root),
                               *args], capture_output=True, text=True, timeout=120)
    out = figure("--report-only", "--dry-run")
    assert out.returncode != 0 and "hopper-pairs-30-s0/1-rlhf-s0 (and 1 more) is the measured copy of a run no " \
                                   "longer in" in out.stderr and "aihf.report" not in out.stdout
    for run in ("hopper-pairs-30-s0/1-rlhf-s0", "hopper-pairs-300-s0/0-aihf-s0"):
        (again / run / "metrics.json").unlink()
        (again / run).rmdir()
    out = figure("--report-only", "--dry-run")
    assert out.returncode == 0 and "2 finished runs not measured yet are left out of the table" in out.stdout
    assert "hopper-no-pairs-s0/0-irl-s0" in out.stdout and "aihf.report" in out.stdout

    hold = ("import sys, time; from pathlib import Path; from aihf.run_dir import hold_dir; "
            "hold_dir(Path(sys.argv[1]), 'x', 'y'); print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(again)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = figure("--no-train")
        assert out.returncode != 0 and "is in use by" in out.stderr and "aihf.mujoco.reevaluate" not in out.stdout
    finally:
        holder.kill()


@pytest.mark.slow
def test_optuna_search_runs_trials_and_returns_the_metric(tmp_path):
    """hparams_search=aihf_hopper with Optuna: two short trials, each returning its normalised score."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "run.py"), "--multirun", "hparams_search=aihf_hopper",
                           "debug=fast", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                           "loop.total_env_steps=1000", "loop.eval_every=100", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert "reward.lr" in results["best_params"]
    trials = [json.loads(m.read_text()) for m in (tmp_path / "sweep").rglob("metrics.json")]
    assert len(trials) == 2
    # the value optimised is each trial's headline: its mean score over the last 20 % of training, not its final one
    assert results["best_value"] == pytest.approx(max(report.score_of(m, headline=True) for m in trials))


def test_figure_runs_seed_major_and_continues_only_unfinished_sweeps(tmp_path):
    """A figure stopped part-way holds whole seeds of every method, and running it again skips the sweeps whose
    runs have all finished and continues the others in place (loop.resume=auto)."""
    from aihf.figures import sweep_commands
    subdirs = [c[-1].removeprefix(f"hydra.sweep.dir={tmp_path}/") for c in
               sweep_commands("comparison_hopper_paper", tmp_path, [])]
    assert subdirs == [f"{i}-s{s}" for s in range(5) for i in range(4)]
    first = sweep_commands("comparison_hopper_paper", tmp_path, [])[0]
    assert "seed=0" in first and "algo=aihf,rlhf" in first and "loop.resume=auto" not in first
    assert "recipe=paper" in first
    (tmp_path / "0-s0" / "0").mkdir(parents=True)  # sweep 0 of seed 0: aihf, rlhf at 10 pairs, all finished
    (tmp_path / "0-s0" / "0" / "metrics.json").write_text("{}")
    (tmp_path / "0-s0" / "1").mkdir(parents=True)
    (tmp_path / "0-s0" / "1" / "metrics.json").write_text("{}")
    (tmp_path / "1-s0" / "0").mkdir(parents=True)  # sweep 1 of seed 0: one of its two runs finished
    (tmp_path / "1-s0" / "0" / "metrics.json").write_text("{}")
    again = sweep_commands("comparison_hopper_paper", tmp_path, [], resume=True)
    assert [c[-1].rsplit("/", 1)[1] for c in again][:4] == ["1-s0", "2-s0", "3-s0", "0-s1"]
    assert all("loop.resume=auto" in c for c in again)


def _sweep_stand_in(flag_dir: Path, name: str, body: str) -> list[str]:
    """A command in the place of a sweep: `body` runs with `me` (its name), `d` (the flag folder) and `wait_for`."""
    import sys
    code = (f"import pathlib, sys, time\nd = pathlib.Path({str(flag_dir)!r}); me = {name!r}\n"
            "def wait_for(f, s=30):\n"
            "    end = time.monotonic() + s\n"
            "    while not (d / f).exists():\n"
            "        if time.monotonic() > end: sys.exit(3)\n"
            "        time.sleep(0.05)\n" + body)
    return [sys.executable, "-c", code]


def test_sweeps_at_once_run_side_by_side_in_order_and_a_failure_starts_no_further_sweep(tmp_path):
    """`--sweeps-at-once K` keeps K sweeps running (each stand-in here needs the other started before it can end,
    which one at a time never allows); K = 1 runs them strictly one after another; when one fails, the sweeps not yet
    started are not started, the one running is waited for, and the figure stops."""
    from aihf.figures import run_all
    both = "(d / me).touch(); wait_for('a' if me == 'b' else 'b')\n"
    run_all([_sweep_stand_in(tmp_path, "a", both), _sweep_stand_in(tmp_path, "b", both)], dry_run=False, at_once=2)
    alone = ("assert not any(d.glob('running-*')), 'two at once'\n(d / f'running-{me}').touch()\ntime.sleep(0.3)\n"
             "(d / f'running-{me}').unlink(); (d / f'done-{me}').touch()\n")
    run_all([_sweep_stand_in(tmp_path, n, alone) for n in "xyz"], dry_run=False, at_once=1)
    assert sorted(f.name for f in tmp_path.glob("done-*")) == ["done-x", "done-y", "done-z"]
    slow = "wait_for('failed'); time.sleep(0.5); (d / 'slow-done').touch()\n"
    fails = "(d / 'failed').touch(); sys.exit(5)\n"
    later = "(d / 'later-ran').touch()\n"
    with pytest.raises(SystemExit, match="exited 5"):
        run_all([_sweep_stand_in(tmp_path, n, b) for n, b in (("s", slow), ("f", fails), ("l", later))],
                dry_run=False, at_once=2)
    assert (tmp_path / "slow-done").exists() and not (tmp_path / "later-ran").exists()
    # two sweeps that fail side by side are both named (by their sweep directory), not only the first
    fail_late = "wait_for('failed'); sys.exit(4)\n"
    swept = [_sweep_stand_in(tmp_path, n, b) + [f"hydra.sweep.dir=/runs/{n}-s0"]
             for n, b in (("f", fails), ("g", fail_late), ("l", later))]
    with pytest.raises(SystemExit) as stopped:
        run_all(swept, dry_run=False, at_once=2)
    assert str(stopped.value) == ("the sweep into /runs/f-s0 exited 5, the sweep into /runs/g-s0 exited 4: "
                                  "the figure was not regenerated")
    assert not (tmp_path / "later-ran").exists()


def test_sweeps_at_once_below_one_is_refused_before_anything_runs(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "aihf.figures", "run", "study_prefs", "--root", str(tmp_path / "r"),
                           "--sweeps-at-once", "0"], capture_output=True, text=True)
    assert proc.returncode != 0 and "--sweeps-at-once: expected a number of sweeps ≥ 1, found 0" in proc.stderr
    assert not (tmp_path / "r").exists()


def _finish(sweep_dir: Path, runs: int) -> None:
    for job in range(runs):
        (sweep_dir / str(job)).mkdir(parents=True)
        (sweep_dir / str(job) / "metrics.json").write_text("{}")


def test_figures_in_one_root_share_their_common_sweeps_and_report_only_their_own(tmp_path):
    """comparison_hopper's runs are the scarcity study's 10- and 100-pair cells and its N = 0 (irl), and the
    recipe ablation's full-recipe cell: made in the same --root they are run once, and each report reads only the
    sweeps of its own figure."""
    from aihf import figures
    comparison = dict(figures.planned_sweeps("comparison_hopper"))
    assert sorted(comparison) == sorted(f"hopper-{n}-s{s}" for s in range(5)
                                        for n in ("pairs-10", "pairs-100", "prefs-only", "no-pairs", "oracle-recipe"))
    for sub, overrides in comparison.items():
        _finish(tmp_path / sub, figures.jobs_in(overrides))
    left = [d.name for d, _ in figures.pending_sweeps("study_prefs", tmp_path, resume=True)]
    assert left == [f"hopper-pairs-{n}-s{s}" for s in range(5) for n in (30, 300)]
    left = [d.name for d, _ in figures.pending_sweeps("recipe_ablation", tmp_path, resume=True)]
    assert left == [f"hopper-{n}-s{s}" for s in range(5) for n in ("no-warm-start", "warm-start-only")]
    assert sum(figures.jobs_in(o) for _, o in figures.planned_sweeps("recipe_ablation")) == 40
    assert sum(figures.jobs_in(o) for _, o in figures.planned_sweeps("study_prefs")) == 60
    assert sum(figures.jobs_in(o) for _, o in comparison.items()) == 55
    report = figures.report_command("comparison_hopper", tmp_path)  # (its runs measured again: into <root>-reevaluated)
    sources = report[3:report.index("--out")]
    assert sorted(sources) == sorted(str(figures.reevaluated_root(tmp_path) / sub) for sub in comparison)
    # HalfCheetah's scarcity study adds its 30- and 300-pair cells to the comparison, whose 55 runs stay as they were
    cheetah = dict(figures.planned_sweeps("comparison_halfcheetah"))
    assert sorted(cheetah) == sorted(f"halfcheetah-{n}-s{s}" for s in range(5) for n in figures.COMPARISON)
    assert sum(figures.jobs_in(o) for o in cheetah.values()) == figures.FIGURES["comparison_halfcheetah"].runs == 55
    assert all("env=halfcheetah" in o for o in cheetah.values())
    for sub, overrides in cheetah.items():
        _finish(tmp_path / sub, figures.jobs_in(overrides))
    left = [d.name for d, _ in figures.pending_sweeps("study_prefs_halfcheetah", tmp_path, resume=True)]
    assert left == [f"halfcheetah-pairs-{n}-s{s}" for s in range(5) for n in (30, 300)]
    assert sum(figures.jobs_in(o) for _, o in figures.planned_sweeps("study_prefs_halfcheetah")) == 60
    left = [d.name for d, _ in figures.pending_sweeps("recipe_critic_halfcheetah", tmp_path, resume=True)]
    assert left == [f"halfcheetah-critic-only-{a}-s{s}" for s in range(5) for a in ("sac_recipe", "aihf", "rlhf")]
    assert sum(figures.jobs_in(o) for _, o in figures.planned_sweeps("recipe_critic_halfcheetah")) == 50


def test_a_shared_sweep_name_means_one_set_of_runs():
    """Two figures that name the same Sweep must run the same overrides, or one would continue the other's runs."""
    from aihf.figures import FIGURES, Sweep
    seen: dict[str, tuple] = {}
    for fig in FIGURES.values():
        for sweep in fig.sweeps:
            if isinstance(sweep, Sweep):
                assert seen.setdefault(sweep.name, sweep.overrides) == sweep.overrides, sweep.name
    assert len(seen) >= 5


def test_every_figure_says_how_many_runs_its_sweeps_make():
    from aihf.figures import FIGURES, jobs_in, planned_sweeps
    for name, fig in FIGURES.items():
        counts = [jobs_in(overrides) for _, overrides in planned_sweeps(name)]
        assert None in counts or sum(counts) == fig.runs, name


def test_a_run_killed_before_its_first_checkpoint_is_kept_aside(tmp_path):
    from aihf.figures import set_aside_uncontinuable
    for name, files in {"0-aihf-s0": ["metrics.json", "csv/metrics.csv"], "1-rlhf-s0": ["checkpoints/last.ckpt"],
                        "2-aihf-s0": ["csv/metrics.csv"], "3-rlhf-s0": [".hydra/config.yaml"]}.items():
        for f in files:
            (tmp_path / name / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f).write_text("x")
    assert [p.name for p in set_aside_uncontinuable(tmp_path)] == ["2-aihf-s0.interrupted-1"]
    assert (tmp_path / "2-aihf-s0.interrupted-1" / "csv" / "metrics.csv").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-aihf-s0", "1-rlhf-s0", "2-aihf-s0.interrupted-1",
                                                           "3-rlhf-s0"]


def test_a_sweep_counts_the_runs_its_experiments_sweeper_adds():
    from aihf.figures import jobs_in
    assert jobs_in(("experiment=comparison", "algo=aihf,rlhf", "data=default,scarce", "seed=0")) == 4
    assert jobs_in(("experiment=hh_reward", "seed=0")) == 2  # its sweeper adds algo.demo_weight=0.0,1.0
    assert jobs_in(("experiment=study_prefs",)) == 2 * 4 * 5  # algo, data.num_prefs, seed: range(5)
    # the command line's value replaces the sweeper's for its key
    assert jobs_in(("experiment=study_prefs", "algo=irl", "data.num_prefs=0")) == 5


def test_figure_records_survive_the_machine_and_continue_the_figure(tmp_path, hopper_data):
    """A figure made over several sessions keeps its finished runs as committed records: saved from one root,
    restored under a fresh one, they count as finished (their sweeps are skipped, and a sweep continued over them
    leaves them as they are: loop.resume=auto returns their metrics and writes nothing), and they tabulate as the
    originals did."""
    from aihf import figures
    from aihf.app import train
    from aihf.errors import ConfigError
    from conftest import fast_cfg
    old, new, records = tmp_path / "old", tmp_path / "new", tmp_path / "records" / "hopper.jsonl"
    comparison = dict(figures.planned_sweeps("comparison_hopper"))
    metrics = {"algo": "aihf", "seed": 0, "env_id": "Hopper-v5", "score": 0.5, "history": [{"step": 10, "x": 1.0}]}
    for job in ("0-aihf-s0", "1-rlhf-s0"):
        (old / "hopper-pairs-10-s0" / job).mkdir(parents=True)
        (old / "hopper-pairs-10-s0" / job / "metrics.json").write_text(json.dumps({**metrics, "job": job}))
    (old / "hopper-pairs-100-s0" / "0-aihf-s0" / "checkpoints").mkdir(parents=True)  # unfinished: not recorded
    assert figures.save_records(old, records) == ["hopper-pairs-10-s0/0-aihf-s0", "hopper-pairs-10-s0/1-rlhf-s0"]
    assert figures.save_records(old, records) == []  # nothing new: the file is unchanged
    assert len(records.read_text().splitlines()) == 2
    (records.parent / "bad.jsonl").write_text('{"run": "x"}\n')
    with pytest.raises(SystemExit, match="bad.jsonl:1: not a run record"):
        figures.read_records(records.parent / "bad.jsonl")
    packed = records.with_name("hopper.jsonl.gz")  # gzip'd where the name says so, byte-stable when saved again
    assert len(figures.save_records(old, packed)) == 2 and figures.read_records(packed) == figures.read_records(records)
    assert packed.read_bytes()[4:8] == bytes(4)  # no timestamp in the gzip header: the same records, the same bytes
    assert figures.save_records(old, packed) == []
    packed.write_text(records.read_text())
    with pytest.raises(SystemExit, match="hopper.jsonl.gz: not gzip-compressed records"):
        figures.read_records(packed)

    assert sorted(figures.restore_records(records, new)) == ["hopper-pairs-10-s0/0-aihf-s0",
                                                             "hopper-pairs-10-s0/1-rlhf-s0"]
    for job in ("0-aihf-s0", "1-rlhf-s0"):
        assert json.loads((new / "hopper-pairs-10-s0" / job / "metrics.json").read_text()) == {**metrics, "job": job}
    assert figures.restore_records(records, new) == []  # never over a run's own metrics.json
    # a run's measurement again replaces the record saved while it trained, and is itself kept as it is
    measured = tmp_path / "old-reevaluated" / "hopper-pairs-10-s0" / "0-aihf-s0"
    measured.mkdir(parents=True)
    measured.joinpath("metrics.json").write_text(json.dumps({**metrics, "reevaluation": {"git_commit": "a"}}))
    assert figures.save_records(tmp_path / "old-reevaluated", records) == ["hopper-pairs-10-s0/0-aihf-s0"]
    assert figures.read_records(records)["hopper-pairs-10-s0/0-aihf-s0"]["reevaluation"] == {"git_commit": "a"}
    measured.joinpath("metrics.json").write_text(json.dumps({**metrics, "reevaluation": {"git_commit": "b"}}))
    assert figures.save_records(tmp_path / "old-reevaluated", records) == []
    assert figures.save_records(old, records) == []  # nor does the trained run's record replace its measurement
    assert figures.read_records(records)["hopper-pairs-10-s0/0-aihf-s0"]["reevaluation"] == {"git_commit": "a"}
    left = [d.name for d, _ in figures.pending_sweeps("comparison_hopper", new, resume=True)]
    assert "hopper-pairs-10-s0" not in left and "hopper-pairs-100-s0" in left and len(left) == len(comparison) - 1
    assert [r["job"] for r in report.load_runs([new])] == ["0-aihf-s0", "1-rlhf-s0"]

    run_dir = new / "hopper-pairs-10-s0" / "0-aihf-s0"
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert train(fast_cfg("aihf", hopper_data, run_dir, ["loop.resume=auto"]))["job"] == "0-aihf-s0"
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # not trained again, nothing written
    with pytest.raises(ConfigError, match="record of another run \\(seed 0, this run's 1\\)"):
        train(fast_cfg("aihf", hopper_data, run_dir, ["loop.resume=auto", "seed=1"]))
    with pytest.raises(ConfigError, match="holds another run's outputs"):  # without resume=auto: refused as before
        train(fast_cfg("aihf", hopper_data, run_dir))


def test_the_significance_threshold_is_where_holms_first_step_turns_significant():
    """The `significant from` column: a mean paired difference just above it has t-test p < α/family (Holm's first step
    calls it), just below it does not; with 5 seeds and 8 contrasts it is 2.35 sd of the differences."""
    spread = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) * 0.1
    bound = stats.smallest_significant_difference(spread + 0.3, family=8)
    assert bound == pytest.approx(2.35 * spread.std(ddof=1), rel=2e-3)
    assert stats.t_test_p(spread + bound * 1.001) * 8 < 0.05 < stats.t_test_p(spread + bound * 0.999) * 8
    assert stats.smallest_significant_difference(spread, family=1) < bound  # a smaller family detects less
    assert np.isnan(stats.smallest_significant_difference([0.1], family=8))


def test_figure_progress_says_which_runs_are_finished_and_where_the_others_stand(tmp_path):
    import os
    import subprocess
    import sys
    from aihf import figures
    sweep = tmp_path / "hopper-no-pairs-s0"
    for job in ("0-irl-s0", "1-sac-s0", "2-bc-s0"):
        (sweep / job / "csv").mkdir(parents=True)
    (sweep / "0-irl-s0" / "metrics.json").write_text("{}")
    (sweep / "1-sac-s0" / "csv" / "metrics.csv").write_text("eval/x,step\n1.0,2500\n,47000\n")
    (sweep / "2-bc-s0" / "csv" / "metrics.csv").write_text("eval/x,step\n1.0,3000\n")
    old = (sweep / "2-bc-s0" / "csv" / "metrics.csv")
    os.utime(old, (old.stat().st_atime, old.stat().st_mtime - 3600))
    (sweep.parent / "hopper-no-pairs-s0" / "3-constant-s0.interrupted-1").mkdir()  # set aside: not a run
    hold = ("import sys, time; from pathlib import Path; from aihf.run_dir import hold_dir; "
            "hold_dir(Path(sys.argv[1]), 'x', 'y'); print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(sweep / "1-sac-s0")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lines = figures.progress("comparison_hopper", tmp_path)
    finally:
        holder.kill()
        holder.wait()
    total = figures.FIGURES["comparison_hopper"].runs
    assert lines[0] == f"comparison_hopper in {tmp_path}: 1 of {total} runs finished"
    assert f"  {'hopper-no-pairs-s0':28s} 1/4 finished; 1-sac-s0 at 47,000 (training (pid {holder.pid})), " \
           f"2-bc-s0 at 3,000 (log last written 60 min ago)" in lines
    assert f"  {'hopper-oracle-recipe-s0':28s} not started (1 run)" in lines
    assert len(lines) == 1 + len(figures.planned_sweeps("comparison_hopper"))


def test_the_difference_for_80_percent_power_is_found_80_percent_of_the_time():
    """Simulated paired differences with that true mean and the sample's spread reach Holm's first step (p < α/8)
    in 80 % of 20,000 experiments of 5 seeds; a z-approximation (the usual shortcut) is found far less often."""
    spread = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) * 0.1
    delta = stats.difference_for_power(spread, family=8)
    sd, n = spread.std(ddof=1), 5
    assert delta > stats.smallest_significant_difference(spread, family=8)
    rng = np.random.default_rng(0)
    draws = rng.normal(delta, sd, size=(20_000, n))
    t = draws.mean(1) / (draws.std(1, ddof=1) / np.sqrt(n))
    crit = __import__("scipy").stats.t.ppf(1 - 0.05 / 16, n - 1)
    assert np.mean(np.abs(t) > crit) == pytest.approx(0.8, abs=0.01)
    z = __import__("scipy").stats.norm
    shortcut = (z.ppf(1 - 0.05 / 16) + z.ppf(0.8)) * sd / np.sqrt(n)
    assert shortcut < 0.8 * delta
    assert np.isnan(stats.difference_for_power([0.1], family=8))
    assert np.isnan(stats.difference_for_power([0.1, 0.2], family=0))  # no contrast had a p-value: no division by 0
    # a second source of error adds to the mean's variance: none leaves the t-interval as it is
    d = [0.1, 0.3, 0.2, 0.25]
    assert stats.t_interval_with(d, 0.0) == pytest.approx(stats.t_interval(d))
    mean, lo, hi = stats.t_interval_with(d, 0.01)
    se = np.sqrt(np.var(d, ddof=1) / 4 + 0.01)
    assert (lo, hi) == pytest.approx((mean - 3.182446305 * se, mean + 3.182446305 * se))
    # no spread (all one value, up to rounding): neither bar exists
    assert np.isnan(stats.difference_for_power([0.2, 0.2, 0.2 + 1e-17], family=8))
    assert np.isnan(stats.smallest_significant_difference([0.2, 0.2, 0.2], family=8))
    with pytest.raises(ValueError, match="power must lie between"):
        stats.difference_for_power(spread, family=8, power=1.0)


def test_the_accuracy_without_the_demonstrators_segments_is_shown_with_its_baselines():
    key = "pref_accuracy_equal_length_without_demonstrator"
    runs = [{"seed": s, f"eval/{key}": 0.6 + 0.1 * s,
             "baselines": {f"baseline/constant/{key}": 0.5, f"baseline/length/{key}": 0.52,
                           f"baseline/policy/{key}": 0.75, f"baseline/demo_classifier/{key}": 0.7 - 0.1 * s},
             "history": [{"step": 10, f"eval/{key}": 0.4}, {"step": 20, f"eval/{key}": 0.9}]} for s in range(2)]
    assert report.without_demonstrator(runs) == (
        f"{report.cell([0.6, 0.7])} (0.500 / 0.520 / 0.750 / 0.650 / 0.400)")


def test_the_probability_of_improvement_has_an_interval_only_where_both_methods_have_ten_seeds(tmp_path):
    for s in range(10):
        write_run(tmp_path, f"a{s}", "method_a", s, 0.5 + 0.01 * s)
        write_run(tmp_path, f"c{s}", "method_c", s, 0.4 + 0.01 * s)
    for s in range(3):
        write_run(tmp_path, f"b{s}", "method_b", s, 0.45 + 0.01 * s)
    poi = report.table(report.load_runs([tmp_path])).split("Probability of improvement")[1]
    row = next(line for line in poi.splitlines() if line.startswith("| method_a |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]  # against method_a, method_b, method_c
    assert cells[0] == "–" and "[" not in cells[1] and cells[2].startswith("1.00 [")
