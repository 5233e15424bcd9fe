"""`aihf.mujoco.reevaluate`: a finished run's learned reward measured again from its last checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aihf.errors import ConfigError
from aihf.mujoco.reevaluate import reevaluate

ROOT = Path(__file__).resolve().parents[1]


def test_a_finished_runs_reward_measured_again_equals_its_own_and_gains_the_new_metrics(hopper_data, tmp_path):
    """A run made by run.py: measured again, every reward metric, its level and the baselines equal what the run
    recorded (same checkpoint, held-out data and EPIC draws), a metric its metrics.json lacks (as a run made before
    the metric existed) is added, the scores and history are kept, the run itself is not touched, and a changed
    dataset, an existing output and a run without a learned reward are handled as documented."""
    run = tmp_path / "sweep" / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "algo=aihf", "debug=fast", f"data.path={hopper_data}",
                           "data.num_prefs=20", "trainer.enable_checkpointing=true", "loop.eval_every=100",
                           f"hydra.run.dir={run}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = json.loads((run / "metrics.json").read_text())
    new = "eval/pref_accuracy_without_demonstrator"
    assert trained.get(new) is not None and trained["reward_updates"] > 0
    older = {k: v for k, v in trained.items() if k != new}  # as if made before the metric existed
    first = min(trained["history"], key=lambda h: h["step"])
    assert first["step"] == 100 and first.get(new) is not None  # before learning_starts: r_θ as initialised
    older["history"] = [{k: v for k, v in h.items() if k != new} for h in trained["history"]]
    older["eval/epic"] = trained["eval/epic"] + 1e-6  # as if measured differently at training: must be named
    (run / "metrics.json").write_text(json.dumps(older))
    before = (run / "metrics.json").read_bytes()
    config = run / ".hydra" / "config.yaml"  # as a run continued with loop.resume=auto (not a setting of the result)
    assert "  resume: null\n" in config.read_text()
    config.write_text(config.read_text().replace("  resume: null\n", "  resume: auto\n", 1))

    reevaluate(run, tmp_path / "again" / "sweep" / "run")
    again = json.loads((tmp_path / "again" / "sweep" / "run" / "metrics.json").read_text())  # (NaN written as null)
    measured = [k for k in trained if k.startswith("eval/") and k not in ("eval/return_mean", "eval/return_std",
                                                                            "eval/normalised_score")]
    assert {"eval/epic", "eval/pref_accuracy_equal_length", "eval/reward_level_agent"} <= set(measured)
    for key in measured:
        assert again[key] == trained[key], key
    assert again["baselines"] == trained["baselines"]
    assert len(trained["heldout_resampled"]["epic"]) == 200 and again["heldout_resampled"] == trained["heldout_resampled"]
    assert new not in again["reevaluation"]["at_training"] and again[new] == trained[new]
    assert again["reevaluation"]["not_reproduced"] == ["eval/epic"]
    assert (again["history"], again["eval/normalised_score"]) == (older["history"], trained["eval/normalised_score"])
    # r_θ as initialised from the run's seed reproduces every metric of the first evaluation, so the metric the
    # history lacks is read from it (and a first evaluation it does not reproduce is named, not used)
    from aihf import report
    assert again["reevaluation"]["first_evaluation"]["eval/epic"] == first["eval/epic"]
    assert report.first_value(again, new) == first[new] and report.first_value(again, "eval/epic") == first["eval/epic"]
    assert (run / "metrics.json").read_bytes() == before
    with pytest.raises(ConfigError, match="already exists"):
        reevaluate(run, tmp_path / "again" / "sweep" / "run")

    (run / "metrics.json").write_text(json.dumps({**older, "data_subset": {**older["data_subset"],
                                                                            "dataset_sha256": "0" * 64}}))
    with pytest.raises(ConfigError, match="learned from a dataset with sha256 000000000000, but"):
        reevaluate(run, tmp_path / "changed")
    assert not (tmp_path / "changed").exists()
    (run / "metrics.json").write_text(json.dumps(older))

    # a setting whose default changed since the run (here: the run's own config says another γ) is refused
    config.write_text(config.read_text().replace("gamma: 0.99", "gamma: 0.9", 1))
    with pytest.raises(ConfigError, match=r"1 setting\(s\) differ from the run's own .hydra/config.yaml, "
                                          r"e.g. policy.gamma: 0.9 → 0.99"):
        reevaluate(run, tmp_path / "other_gamma")
    llm = tmp_path / "sweep" / "llm"
    llm.mkdir()
    (llm / "metrics.json").write_text(json.dumps({"algo": "dpo", "reward_updates": 0}))
    with pytest.raises(ConfigError, match="is not a MuJoCo run"):
        reevaluate(llm, tmp_path / "llm_out")

    plain = tmp_path / "sweep" / "sac"
    plain.mkdir()
    (plain / "metrics.json").write_text(json.dumps({"env_id": "Hopper-v5", "algo": "sac", "reward_updates": 0,
                                                    "eval/return_mean": 5.0}))
    copied = reevaluate(plain, tmp_path / "again" / "sweep" / "sac")
    assert copied["eval/return_mean"] == 5.0 and copied["reevaluation"]["copied"] == "no learned reward to measure"

    # a first evaluation that r_θ as initialised does not reproduce (as one made after reward updates) is named
    config.write_text(config.read_text().replace("gamma: 0.9\n", "gamma: 0.99\n", 1))
    shifted = [{**h, "eval/epic": h["eval/epic"] + 1e-6} if h is older["history"][0] else h
               for h in older["history"]]
    (run / "metrics.json").write_text(json.dumps({**older, "history": shifted}))
    assert min(shifted, key=lambda h: h["step"])["eval/epic"] != first["eval/epic"]
    other = reevaluate(run, tmp_path / "shifted" / "sweep" / "run")
    assert other["reevaluation"]["first_evaluation_not_reproduced"] == ["eval/epic"]
    assert "first_evaluation" not in other["reevaluation"] and report.first_value(other, new) is None


def test_a_restored_record_is_carried_over_if_it_was_measured_and_refused_if_not(tmp_path):
    """`aihf.figures restore` writes back a run's metrics.json without its checkpoints: a record that was measured
    again before is copied as it is (its reevaluation still names the commit that measured it), one saved while its
    run trained cannot be measured and is refused with what to do, and nothing is written for it."""
    measured = {"env_id": "Hopper-v5", "algo": "aihf", "reward_updates": 40, "status": "finished", "eval/epic": 0.3,
                "reevaluation": {"git_commit": "0371169", "at_training": {"eval/epic": 0.3}, "not_reproduced": []}}
    run = tmp_path / "root" / "sweep" / "0-aihf-s0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(measured))
    assert reevaluate(run, tmp_path / "again" / "sweep" / "0-aihf-s0", "ffffff") == measured
    assert json.loads((tmp_path / "again" / "sweep" / "0-aihf-s0" / "metrics.json").read_text()) == measured
    trained = {k: v for k, v in measured.items() if k != "reevaluation"}
    (run / "metrics.json").write_text(json.dumps(trained))
    with pytest.raises(ConfigError, match="checkpoints/last.ckpt, which is missing .*to train it again, remove"):
        reevaluate(run, tmp_path / "other" / "sweep" / "0-aihf-s0", "ffffff")
    assert not (tmp_path / "other").exists()
    # from the command line a refused run does not keep the others from being measured; the step fails at the end
    carried = tmp_path / "root" / "sweep" / "1-rlhf-s0"
    carried.mkdir()
    (carried / "metrics.json").write_text(json.dumps(measured))
    proc = subprocess.run([sys.executable, "-m", "aihf.mujoco.reevaluate", str(run), str(carried), "--out",
                           str(tmp_path / "cli")], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "1 run(s) could not be measured" in proc.stderr
    assert f"Refused: {run}: its learned reward" in proc.stdout and "carried over as it is" in proc.stdout
    assert (tmp_path / "cli" / "sweep" / "1-rlhf-s0" / "metrics.json").is_file()
    assert not (tmp_path / "cli" / "sweep" / "0-aihf-s0").exists()


def test_an_interrupted_measurement_is_measured_again_and_a_finished_one_is_kept(tmp_path):
    """A measurement killed between making its output folder and writing metrics.json leaves a folder with no record
    (or only the record's temporary): the next pass measures that run again instead of skipping it as "already
    evaluated" for ever, while a folder holding a record, or anything else, is never written into."""
    measured = {"env_id": "Hopper-v5", "algo": "aihf", "reward_updates": 40, "status": "finished", "eval/epic": 0.3,
                "reevaluation": {"git_commit": "0371169", "at_training": {"eval/epic": 0.3}, "not_reproduced": []}}
    root, again = tmp_path / "root" / "sweep", tmp_path / "again" / "sweep"
    for name in ("0-aihf-s0", "1-rlhf-s0", "2-irl-s0"):
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps({**measured, "eval/epic": len(name)}))
    (again / "0-aihf-s0").mkdir(parents=True)  # killed after the folder was made
    (again / "0-aihf-s0" / "metrics.json.tmp-4242").write_text('{"eval/ep')  # killed mid-write
    (again / "1-rlhf-s0").mkdir()
    (again / "1-rlhf-s0" / "metrics.json").write_text('{"kept": true}')  # finished earlier
    (again / "2-irl-s0").mkdir()
    (again / "2-irl-s0" / "notes.txt").write_text("someone's file")
    with pytest.raises(ConfigError, match="already exists"):
        reevaluate(root / "2-irl-s0", again / "2-irl-s0", "ffffff")
    proc = subprocess.run([sys.executable, "-m", "aihf.mujoco.reevaluate", *(str(root / n) for n in (
        "0-aihf-s0", "1-rlhf-s0")), "--out", str(tmp_path / "again")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "interrupted before it wrote metrics.json: evaluated again" in proc.stdout
    assert "1-rlhf-s0 exists: skipped (already evaluated)" in proc.stdout
    assert [p.name for p in (again / "0-aihf-s0").iterdir()] == ["metrics.json"]
    assert json.loads((again / "0-aihf-s0" / "metrics.json").read_text())["eval/epic"] == len("0-aihf-s0")
    assert json.loads((again / "1-rlhf-s0" / "metrics.json").read_text()) == {"kept": True}
    assert [p.name for p in (again / "2-irl-s0").iterdir()] == ["notes.txt"]
