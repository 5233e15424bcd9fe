"""The catalogue of bad input: each case is a command line (and the files it points at) that a real user might
type; each must stop with its exact one-line message and exit code, leave no run directory, and leave an earlier run
beside it byte-identical. `docs/errors.md` is this table, rendered by `python tests/test_catalogue.py`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import ROOT, run_cli  # noqa: E402

MUJOCO = ["algo=aihf", "debug=fast", "data.path={data}", "data.num_prefs=20", "loop.torch_threads=1"]
LLM = ["domain=llm", "algo=sft", *(f"llm.data.{k}={{sort}}/{k}.jsonl" for k in
                                   ("demos", "prefs", "heldout_demos", "heldout_prefs", "eval_prompts")),
       "llm.train.policy_steps=2", "llm.train.batch_size=4", "llm.policy.hidden_size=32", "llm.train.eval_every=0",
       "algo.bc_warmstart_steps=2", "llm.train.torch_threads=1", "trainer.enable_progress_bar=false"]


@dataclass
class Case:
    id: str
    args: list[str]
    message: str
    code: int = 2
    files: dict = field(default_factory=dict)  # name -> writer(path, world) run before the case


# -- files the cases point at ------------------------------------------------------------------------------------
def dataset_copy(**changes):
    def write(path: Path, world) -> None:
        src = world["data_path"]
        with np.load(src, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for k, fn in changes.items():
            arrays[k] = fn(arrays[k].copy())
        np.savez(path, **arrays)
        path.with_suffix(".json").write_text(src.with_suffix(".json").read_text())
    return write


def metadata(edit):
    def write(path: Path, world) -> None:
        dataset_copy()(path, world)
        path.with_suffix(".json").write_text(edit(json.loads(path.with_suffix(".json").read_text())))
    return write


def corrupt_model(path: Path, world) -> None:
    """A model folder whose config is fine and whose weights file is cut short (an interrupted download)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64}))
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")


def episode_file(**changes):
    """A plain episode file (docs/data.md): two truncated 5-step episodes of Hopper-v5."""
    def write(path: Path, world) -> None:
        arrays = {"observations": np.zeros((10, 11)), "actions": np.zeros((10, 3), np.float32),
                  "rewards": np.ones(10), "terminations": np.zeros(10, bool),
                  "truncations": np.isin(np.arange(10), (4, 9)), "episode_lengths": np.array([5, 5])}
        for k, fn in changes.items():
            arrays[k] = fn(arrays[k].copy())
        np.savez(path, **arrays)
    return write


def set_item(a, index, value):
    a[index] = value
    return a


def text(content: str | bytes):
    def write(path: Path, world) -> None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return write


def truncated(source: str, keep: int):
    def write(path: Path, world) -> None:
        path.write_bytes(Path(world[source]).read_bytes()[:keep])
    return write


def directory(path: Path, world) -> None:
    path.mkdir()


def finished_run(**record):
    """A run directory holding only a finished run's metrics.json, as `aihf.figures restore` leaves it."""
    def write(path: Path, world) -> None:
        path.mkdir()
        (path / "metrics.json").write_text(json.dumps({"algo": "aihf", "status": "finished", **record}))
    return write


DEMO = '{"prompt": "sort: 3 1 2", "response": "1 2 3"}\n'
CASES = [
    # -- numeric ranges, declared in the schema ---------------------------------------------------------------
    Case("total_env_steps_zero", [*MUJOCO, "loop.total_env_steps=0"],
         "loop.total_env_steps=0: expected an integer >= 1"),
    Case("total_env_steps_negative", [*MUJOCO, "loop.total_env_steps=-5"],
         "loop.total_env_steps=-5: expected an integer >= 1"),
    Case("steps_per_iteration_zero", [*MUJOCO, "loop.steps_per_iteration=0"],
         "loop.steps_per_iteration=0: expected an integer >= 1"),
    Case("eval_every_zero", [*MUJOCO, "loop.eval_every=0"], "loop.eval_every=0: expected an integer >= 1"),
    Case("reward_every_zero", [*MUJOCO, "algo.reward_every=0"],
         "algo.reward_every=0: the alternating schedule needs at least 1 env step between reward phases"),
    Case("policy_window_zero", [*MUJOCO, "data.policy_window=0"], "data.policy_window=0: expected an integer >= 1"),
    Case("lr_nan", [*MUJOCO, "policy.actor_lr=nan"], "policy.actor_lr=nan: expected a finite number > 0"),
    Case("lr_inf", [*MUJOCO, "policy.critic_lr=inf"], "policy.critic_lr=inf: expected a finite number > 0"),
    Case("beta_zero", [*MUJOCO, "algo.beta=0"], "algo.beta=0: expected a finite number > 0 or one of alpha"),
    Case("beta_negative", [*MUJOCO, "algo.beta=-1"], "algo.beta=-1: expected a finite number > 0 or one of alpha"),
    Case("batch_size_zero", [*MUJOCO, "policy.batch_size=0"], "policy.batch_size=0: expected an integer >= 1"),
    Case("buffer_size_zero", [*MUJOCO, "policy.buffer_size=0"], "policy.buffer_size=0: expected an integer >= 1"),
    Case("final_eval_episodes_zero", [*MUJOCO, "loop.final_eval_episodes=0"],
         "loop.final_eval_episodes=0: expected an integer >= 1"),
    Case("gamma_above_one", [*MUJOCO, "policy.gamma=1.5"], "policy.gamma=1.5: expected a finite number in [0, 1]"),
    Case("tau_zero", [*MUJOCO, "policy.tau=0"], "policy.tau=0.0: expected a finite number in (0, 1]"),
    Case("demo_replay_fraction_one", [*MUJOCO, "recipe.demo_replay_fraction=1"],
         "recipe.demo_replay_fraction=1.0: expected a finite number in [0, 1)"),
    Case("beta_word", [*MUJOCO, "algo.beta=temperature"],
         "algo.beta='temperature': expected a finite number > 0 or one of alpha"),
    Case("num_envs_zero", [*MUJOCO, "env.num_envs=0"], "env.num_envs=0: expected an integer >= 1"),
    Case("hidden_empty", [*MUJOCO, "policy.hidden=[]"],
         "policy.hidden=[]: expected a non-empty list, each item an integer >= 1"),
    Case("reward_clamp_negative", [*MUJOCO, "reward.clamp=-1"], "reward.clamp=-1.0: expected a finite number >= 0"),
    Case("demo_weight_negative", [*MUJOCO, "algo.demo_weight=-1"],
         "algo.demo_weight=-1.0: expected a finite number >= 0"),
    Case("seed_negative", [*MUJOCO, "seed=-1"], "seed=-1: expected an integer in [0, 4294967295]"),
    Case("keep_checkpoints_zero", [*MUJOCO, "loop.keep_checkpoints=0"],
         "loop.keep_checkpoints=0: expected an integer >= 1"),
    Case("updates_per_step_zero", [*MUJOCO, "policy.updates_per_step=0"],
         "policy.updates_per_step=0.0: expected a finite number > 0"),
    Case("llm_split_fold_out_of_range", [*LLM, "llm.data.split_folds=5", "llm.data.split_fold=5"],
         "llm.data.split_fold=5: expected 0 to 4 (llm.data.split_folds=5)"),
    Case("llm_batch_size_zero", [*LLM, "llm.train.batch_size=0"], "llm.train.batch_size=0: expected an integer >= 1"),
    Case("llm_policy_steps_negative", [*LLM, "llm.train.policy_steps=-5"],
         "llm.train.policy_steps=-5: expected an integer >= 0"),
    Case("llm_epochs_and_policy_steps", [*LLM, "llm.train.epochs=1"],
         "llm.train.epochs and llm.train.policy_steps both set: the main stage's length is one or the other"),
    Case("llm_epochs_zero", [*LLM, "llm.train.epochs=0"], "llm.train.epochs=0.0: expected a finite number > 0"),
    Case("label_smoothing_two", [*LLM, "algo=dpo", "algo.label_smoothing=2"],
         "algo.label_smoothing=2.0: expected a finite number in [0, 0.5)"),
    Case("temperature_zero", [*LLM, "llm.train.temperature=0"],
         "llm.train.temperature=0.0: expected a finite number > 0"),
    Case("max_new_tokens_zero", [*LLM, "llm.train.max_new_tokens=0"],
         "llm.train.max_new_tokens=0: expected an integer >= 1"),
    Case("llm_lr_nan", [*LLM, "llm.policy.lr=nan"], "llm.policy.lr=nan: expected a finite number > 0"),
    Case("heldout_fraction_one", [*LLM, "llm.data.heldout_fraction=1"],
         "llm.data.heldout_fraction=1.0: expected a finite number in [0, 1)"),
    Case("vocab_size_zero", [*LLM, "llm.tokenizer.vocab_size=0"],
         "llm.tokenizer.vocab_size=0: expected an integer >= 16"),
    Case("llm_beta_null", [*LLM, "algo=dpo", "algo.beta=null"],
         "algo.beta=None: the LLM objectives need a KL coefficient β > 0"),
    # -- choices, keys, types and options ---------------------------------------------------------------------
    Case("weighting_unknown", [*MUJOCO, "algo.weighting=avg"],
         "algo.weighting='avg': expected one of mean, sum"),
    Case("vectorization_unknown", [*MUJOCO, "env.vectorization_mode=threads"],
         "env.vectorization_mode='threads': expected one of sync, async"),
    Case("prompt_truncation_unknown", [*LLM, "llm.data.prompt_truncation=right"],
         "llm.data.prompt_truncation='right': expected one of error, left"),
    Case("nonfinite_unknown", [*MUJOCO, "loop.nonfinite=ignore"],
         "loop.nonfinite='ignore': expected one of stop, skip"),
    Case("task_unknown", [*MUJOCO, "task=evaluate"], "task='evaluate': expected one of train, collect, import"),
    Case("misspelt_key", [*MUJOCO, "algo.demo_wieght=1"],
         "algo.demo_wieght=1: no such key algo.demo_wieght; did you mean algo.demo_weight? "
         "(every key is in src/aihf/config.py)"),
    Case("wrong_type", [*MUJOCO, "algo.demo_weight=abc"], "algo.demo_weight=abc: algo.demo_weight expects a number, "
         "found 'abc'"),
    Case("float_for_int", [*MUJOCO, "loop.eval_every=1.5"],
         "loop.eval_every=1.5: loop.eval_every expects an integer, found 1.5"),
    Case("unknown_preset", [*MUJOCO, "algo=dqn"], "algo=dqn: no such algo option; expected one of aihf, aihf_dpo, "
         "aihf_selfplay, bc, constant, dpo, ipo, irl, llm_base, rlhf, rm, rpo, sac, sac_recipe, sft, spin"),
    Case("unknown_model", [*LLM, "llm_model=gpt5"], "llm_model=gpt5: no such llm_model option; expected one of "
         "smollm2, tiny"),
    Case("appended_unknown_key", [*MUJOCO, "+foo=1"], "+foo=1: no such key foo (every key is in src/aihf/config.py)"),
    Case("train_kwargs_without_plus", [*MUJOCO, "env.train_kwargs.reset_noise_scale=0.1"],
         "env.train_kwargs.reset_noise_scale=0.1: env.train_kwargs holds free-form gymnasium.make kwargs; add one "
         "with +env.train_kwargs.reset_noise_scale=0.1"),
    # -- keys the chosen domain or task would ignore ----------------------------------------------------------
    Case("mujoco_key_in_llm", [*LLM, "data.num_prefs=100"], "data.num_prefs=100: a MuJoCo setting, but this run has "
         "domain=llm; it would be ignored (the language-model key is llm.data.num_prefs)"),
    Case("debug_in_llm", [*LLM, "debug=fast"], "debug=fast: a MuJoCo setting, but this run has domain=llm; it would "
         "be ignored (for a short language-model run, lower llm.train.policy_steps)"),
    Case("env_group_in_llm", [*LLM, "env=walker2d"],
         "env=walker2d: a MuJoCo setting, but this run has domain=llm; it would be ignored"),
    Case("llm_group_in_mujoco", [*MUJOCO, "llm_model=smollm2"],
         "llm_model=smollm2: a language-model setting, but this run has domain=mujoco; it would be ignored"),
    Case("llm_algo_key_in_mujoco", [*MUJOCO, "algo.label_smoothing=0.1"], "algo.label_smoothing=0.1: a "
         "language-model setting, but this run has domain=mujoco; it would be ignored"),
    Case("mujoco_algo_key_in_llm", [*LLM, "algo.needs_demos=false"], "algo.needs_demos=false: a "
         "MuJoCo setting, but this run has domain=llm; it would be ignored"),
    Case("mujoco_recipe_in_llm", [*LLM, "recipe.demo_replay_fraction=0.25"], "recipe.demo_replay_fraction=0.25: a "
         "MuJoCo setting, but this run has domain=llm; it would be ignored"),
    Case("llm_warmstart_in_mujoco", [*MUJOCO, "algo.bc_warmstart_steps=0"], "algo.bc_warmstart_steps=0: a "
         "language-model setting, but this run has domain=mujoco; it would be ignored"),
    Case("teacher_key_in_train", [*MUJOCO, "teacher.mistake_prob=0.2"], "teacher.mistake_prob=0.2: read when "
         "a dataset's pairs are labelled (task=collect, task=import) or relabelled in training (data.relabel=true), "
         "but this run has task=train; it would be ignored"),
    Case("collect_in_llm", [*LLM, "task=collect"],
         "task=collect builds MuJoCo datasets, but this run has domain=llm"),
    # -- presets and their needs ------------------------------------------------------------------------------
    Case("mujoco_preset_in_llm", [*LLM, "algo=sac"], "algo.reward_source='env': expected one of "
         "('learned', 'implicit')"),
    Case("llm_preset_in_mujoco", [*MUJOCO, "algo=dpo"], "algo.reward_source='implicit': expected one of "
         "('learned', 'env', 'constant')"),
    Case("rlhf_without_prefs", [*MUJOCO, "algo=rlhf", "data.num_prefs=0"],
         "this preset learns from preferences, but data.num_prefs=0 (give it preference pairs)"),
    Case("ddp_in_mujoco", [*MUJOCO, "trainer=ddp"], "trainer.strategy=ddp_find_unused_parameters_true: the MuJoCo "
         "domain trains in one process (its envs, replay buffer and SAC updates are sequential); scale with "
         "env.num_envs, a GPU, or seeds in parallel (--multirun)"),
    Case("num_envs_not_dividing", [*MUJOCO, "env.num_envs=3"], "loop.steps_per_iteration=100 is not a multiple of "
         "env.num_envs=3: one vector step is 3 env steps"),
    Case("unknown_env", [*MUJOCO, "algo=sac", "env.id=Hoppper-v5"],
         "env.id='Hoppper-v5' cannot be made by gymnasium: Environment `Hoppper` doesn't exist. Did you mean: `Hopper`?"),
    # -- MuJoCo datasets --------------------------------------------------------------------------------------
    Case("data_missing", [*MUJOCO, "data.path={files}/nope.npz"],
         "data file {files}/nope.npz does not exist (set data.path, or run task=collect to make one)"),
    Case("data_empty", [*MUJOCO, "data.path={files}/empty.npz"],
         "data file {files}/empty.npz is corrupt or not an .npz archive: No data left in file", files={"empty.npz": text(b"")}),
    Case("data_truncated", [*MUJOCO, "data.path={files}/cut.npz"],
         "data file {files}/cut.npz is corrupt or not an .npz archive: File is not a zip file",
         files={"cut.npz": truncated("data_path", 500)}),
    Case("data_nan", [*MUJOCO, "data.path={files}/nan.npz"],
         "data file {files}/nan.npz: obs contains NaN or inf (first at row 7)",
         files={"nan.npz": dataset_copy(obs=lambda a: set_item(a, (7, 2), np.nan))}),
    Case("pair_index_negative", [*MUJOCO, "data.path={files}/neg.npz"],
         "data file {files}/neg.npz: pair_index row 3 has a negative index or an empty segment ([-1, 0, 37, 7, 0, 14])",
         files={"neg.npz": dataset_copy(pair_index=lambda a: set_item(a, (3, 0), -1))}),
    Case("pair_label_three", [*MUJOCO, "data.path={files}/label.npz"],
         "data file {files}/label.npz: pair_label row 4 is 3, expected a value in [0, 1]",
         files={"label.npz": dataset_copy(pair_label=lambda a: set_item(a, 4, 3.0))}),
    Case("obs_dimension", [*MUJOCO, "data.path={files}/dim.npz"],
         "data file {files}/dim.npz: observations have dimension 5, but env Hopper-v5 has observation dimension 11",
         files={"dim.npz": dataset_copy(obs=lambda a: np.zeros((a.shape[0], 5), np.float32))}),
    Case("metadata_return_string", [*MUJOCO, "data.path={files}/meta.npz"],
         "metadata {files}/meta.json: expert_return should be a finite number, found '604.7'",
         files={"meta.npz": metadata(lambda m: json.dumps({**m, "expert_return": "604.7"}))}),
    Case("metadata_not_json", [*MUJOCO, "data.path={files}/meta.npz"],
         "metadata {files}/meta.json is not valid JSON: line 1: Expecting property name enclosed in double quotes",
         files={"meta.npz": metadata(lambda m: "{")}),
    Case("metadata_not_object", [*MUJOCO, "data.path={files}/meta.npz"],
         "metadata {files}/meta.json: expected a JSON object, found list", files={"meta.npz": metadata(lambda m: "[]")}),
    Case("action_out_of_bounds", [*MUJOCO, "data.path={files}/act.npz"],
         "data file {files}/act.npz: act row 5 column 1 is 1.5, outside the env's action bounds [-1, 1]",
         files={"act.npz": dataset_copy(act=lambda a: set_item(a, (5, 1), 1.5))}),
    Case("return_not_reward_sum", [*MUJOCO, "data.path={files}/ret.npz"],
         "data file {files}/ret.npz: traj_return row 2 is 5, but its rewards sum to 0",
         files={"ret.npz": dataset_copy(reward=np.zeros_like, traj_return=lambda a: set_item(np.zeros_like(a), 2, 5.0))}),
    Case("heldout_pair_on_train_trajectory", [*MUJOCO, "data.path={files}/leak.npz"],
         "data file {files}/leak.npz: pair row 60 (held-out) uses trajectory 3 of the train split; pairs may only use "
         "trajectories of their own split",
         files={"leak.npz": dataset_copy(pair_index=lambda a: set_item(a, 60, [3, 0, 1, 2, 0, 1]))}),
    Case("traj_split_unknown", [*MUJOCO, "data.path={files}/split.npz"],
         "data file {files}/split.npz: traj_split row 4 is 7, expected 0 (demo), 1 (train) or 2 (held-out)",
         files={"split.npz": dataset_copy(traj_split=lambda a: set_item(a, 4, 7))}),
    Case("traj_start_float", [*MUJOCO, "data.path={files}/float.npz"],
         "data file {files}/float.npz: traj_start has dtype float64, expected an integer type",
         files={"float.npz": dataset_copy(traj_start=lambda a: a.astype(np.float64))}),
    Case("metadata_empty_object", [*MUJOCO, "data.path={files}/meta.npz"],
         'metadata {files}/meta.json: lacks env_id (the gymnasium id the data was recorded on, e.g. "Hopper-v5")',
         files={"meta.npz": metadata(lambda m: "{}")}),
    Case("metadata_without_anchor", [*MUJOCO, "data.path={files}/meta.npz"],
         "metadata {files}/meta.json: lacks random_return, needed for the normalised score: add it, or state both "
         "anchors as env.expert_return and env.random_return",
         files={"meta.npz": metadata(lambda m: json.dumps({k: v for k, v in m.items() if k != "random_return"}))}),
    # -- task=import ------------------------------------------------------------------------------------------
    Case("import_without_source", ["task=import", "collect.output={files}/out.npz"],
         "task=import needs exactly one of source.minari=[<id or folder>, ...], source.episodes=<file>.npz or "
         "source.sb3=[<model>.zip, ...]; found none"),
    Case("import_incomplete_episode", ["task=import", "source.episodes={files}/eps.npz", "collect.output={files}/out.npz"],
         "episode file {files}/eps.npz: episode 1 (steps 5..9) ends with neither a termination nor a truncation: an "
         "incomplete episode", files={"eps.npz": episode_file(truncations=lambda a: set_item(a, 9, False))}),
    Case("import_lengths_disagree", ["task=import", "source.episodes={files}/eps.npz", "collect.output={files}/out.npz"],
         "episode file {files}/eps.npz: episode_lengths sum to 11, but there are 10 steps",
         files={"eps.npz": episode_file(episode_lengths=lambda a: set_item(a, 0, 6))}),
    Case("import_output_exists", ["task=import", "source.episodes={files}/eps.npz", "collect.output={data}"],
         "collect.output={data} already exists: nothing was overwritten; choose another path",
         files={"eps.npz": episode_file()}),
    Case("import_key_under_collect", ["task=collect", "source.episodes=x.npz"],
         "source.episodes=x.npz: read by task=import only (where external episodes come from), but this run has "
         "task=collect; it would be ignored"),
    Case("num_demos_too_many", [*MUJOCO, "data.num_demos=50"],
         "data.num_demos=50, but {data} holds 2 demonstrations"),
    Case("num_prefs_too_many", [*MUJOCO, "data.num_prefs=100000"],
         "data.num_prefs=100000, but {data} holds 60 training pairs"),
    # -- language-model data ----------------------------------------------------------------------------------
    Case("llm_data_missing", [*LLM, "llm.data.demos={files}/nope.jsonl"],
         "llm.data.demos: {files}/nope.jsonl: no such data file"),
    Case("llm_data_empty", [*LLM, "algo=dpo", "llm.data.prefs={files}/prefs.jsonl"],
         "llm.data.prefs: {files}/prefs.jsonl: empty file (no rows)", files={"prefs.jsonl": text("")}),
    Case("llm_data_not_utf8", [*LLM, "llm.data.demos={files}/demos.jsonl"], "llm.data.demos: {files}/demos.jsonl:2: "
         "not UTF-8 text (byte 0xff at offset 59)", files={"demos.jsonl": text(DEMO.encode() + b'{"prompt": "\xff"}\n')}),
    Case("llm_data_malformed", [*LLM, "llm.data.demos={files}/demos.jsonl"], "llm.data.demos: {files}/demos.jsonl:2: "
         "malformed JSON (Expecting property name enclosed in double quotes at column 2)",
         files={"demos.jsonl": text(DEMO + "{oops\n")}),
    Case("llm_data_not_object", [*LLM, "llm.data.demos={files}/demos.jsonl"],
         "llm.data.demos: {files}/demos.jsonl:1: expected a JSON object, found list", files={"demos.jsonl": text("[1]\n")}),
    Case("llm_data_missing_field", [*LLM, "llm.data.demos={files}/demos.jsonl"],
         "llm.data.demos: {files}/demos.jsonl row 2: missing field 'response' (found ['prompt'])",
         files={"demos.jsonl": text(DEMO + '{"prompt": "sort: 2 1"}\n')}),
    Case("llm_data_csv", [*LLM, "llm.data.demos={files}/demos.csv"],
         "llm.data.demos: {files}/demos.csv: unsupported data file; expected .jsonl, .json or .parquet (optionally .gz)", files={"demos.csv": text("prompt\n")}),
    Case("llm_num_prefs_too_many", [*LLM, "algo=dpo", "llm.data.num_prefs=100000"],
         "llm.data.num_prefs=100000, but the data holds 64 training preference pairs"),
    Case("llm_json_malformed", [*LLM, "llm.data.demos={files}/demos.json"],
         "llm.data.demos: {files}/demos.json:3: malformed JSON (Expecting value at column 16)",
         files={"demos.json": text('[\n  {"prompt": "a",\n   "response": }\n]\n')}),
    # -- models and tokenizers --------------------------------------------------------------------------------
    Case("fsdp_on_cpu", [*LLM, "trainer=fsdp", "trainer.accelerator=cpu"],
         "trainer.strategy=fsdp needs GPUs (Lightning's FSDP and DeepSpeed refuse trainer.accelerator=cpu); on a "
         "CPU use trainer=ddp"),
    Case("fsdp_in_mujoco", [*MUJOCO, "trainer=fsdp"],
         "trainer.strategy=fsdp: sharded strategies are for the language-model domain (domain=llm); this run has "
         "domain=mujoco"),
    Case("llm_policy_target_missing", [*LLM, "llm.policy._target_=mylab.models.make_policy"],
         "llm.policy._target_='mylab.models.make_policy' cannot be imported (expected a dotted path to a callable)"),
    Case("llm_reference_target_wrong_arguments", [*LLM, "llm.reference._target_=aihf.llm.models.is_lora"],
         "llm.reference._target_=aihf.llm.models.is_lora does not take this run's arguments: is_lora() got an "
         "unexpected keyword argument 'policy'"),
    Case("model_dir_empty", [*LLM, "llm.policy.name_or_path={files}/model"],
         "llm.policy.name_or_path='{files}/model' is an empty directory (expected a saved model or tokenizer)", files={"model": directory}),
    Case("model_safetensors_corrupt", [*LLM, "llm.policy.name_or_path={files}/model"],
         "llm.policy.name_or_path='{files}/model' cannot be loaded: Error while deserializing header: invalid "
         "header length", files={"model": corrupt_model}),
    Case("heads_not_dividing_hidden", [*LLM, "llm.policy.hidden_size=30", "llm.policy.num_heads=4"],
         "llm.policy.hidden_size=30 is not divisible by llm.policy.num_heads=4: each attention head gets "
         "hidden_size / num_heads"),
    Case("tokenizer_without_name", [*LLM, "llm.tokenizer.kind=pretrained"],
         "llm.tokenizer.name_or_path is not set: give a model or tokenizer folder (or a hub name when online)"),
    Case("tokenizer_dir_empty", [*LLM, "llm.tokenizer.kind=pretrained", "llm.tokenizer.name_or_path={files}/tok"],
         "llm.tokenizer.name_or_path='{files}/tok' is an empty directory (expected a saved model or tokenizer)", files={"tok": directory}),
    Case("reward_dir_empty", [*LLM, "algo=rm", "llm.reward.name_or_path={files}/rm"],
         "llm.reward.name_or_path='{files}/rm' is an empty directory (expected a saved model or tokenizer)", files={"rm": directory}),
    Case("model_hub_name_offline", [*LLM, "llm.policy.name_or_path=HuggingFaceTB/SmolLM2-135M"],
         "llm.policy.name_or_path='HuggingFaceTB/SmolLM2-135M' is not a local path and HF_HUB_OFFLINE=1 forbids the hub: give a local model folder (see docs/llm.md for preparing one)"),
    # -- checkpoints ------------------------------------------------------------------------------------------
    Case("init_from_missing", [*MUJOCO, "loop.init_from={files}/nope.ckpt"], "loop.init_from={files}/nope.ckpt does "
         "not exist"),
    Case("init_from_truncated", [*MUJOCO, "algo=sac", "loop.init_from={files}/cut.ckpt"],
         "loop.init_from={files}/cut.ckpt cannot be read as a checkpoint (truncated, corrupt or not a torch checkpoint): PytorchStreamReader failed reading zip archive: failed finding central directory",
         files={"cut.ckpt": truncated("ckpt", 1000)}),
    Case("init_from_not_a_checkpoint", [*MUJOCO, "algo=sac", "loop.init_from={data}"],
         "loop.init_from={data} cannot be read as a checkpoint (truncated, corrupt or not a torch checkpoint): file in archive is not in a subdirectory: obs.npy"),
    Case("init_from_other_env", [*MUJOCO, "algo=sac", "loop.init_from={cheetah_ckpt}"],
         "loop.init_from={cheetah_ckpt} was made with env.id=HalfCheetah-v5, this run has env.id=Hopper-v5"),
    Case("init_from_other_preset", [*MUJOCO, "algo=aihf", "loop.init_from={ckpt}"],
         "loop.init_from={ckpt} was made with algo.reward_source=env, this run has algo.reward_source=learned"),
    Case("init_from_other_architecture", [*MUJOCO, "algo=sac", "policy.hidden=[16,16]", "loop.init_from={ckpt}"],
         "loop.init_from={ckpt}: policy.actor.trunk.0.weight has shape (32, 11) in the checkpoint, (16, 11) in this run: another architecture"),
    Case("init_from_other_domain", [*LLM, "loop.init_from={ckpt}"],
         "loop.init_from={ckpt} is a checkpoint of an aihf MuJoCo run; this run is a language-model run"),
    Case("resume_missing", [*MUJOCO, "loop.resume={files}/nope"],
         "loop.resume={files}/nope does not exist (expected a run directory, a .ckpt file or auto)"),
    Case("resume_dir_without_checkpoint", [*MUJOCO, "loop.resume={files}/emptyrun"],
         "loop.resume={files}/emptyrun: no checkpoint in this run directory ({files}/emptyrun/checkpoints/last.ckpt does not exist)",
         files={"emptyrun": directory}),
    Case("resume_auto_record_of_another_run", [*MUJOCO, "loop.resume=auto", "hydra.run.dir={files}/restored", "seed=1"],
         "loop.resume=auto: {files}/restored/metrics.json is the record of another run (seed 0, this run's 1); choose a new hydra.run.dir",
         files={"restored": finished_run(seed=0, budget=600)}),
    Case("resume_auto_finished_below_budget", [*MUJOCO, "loop.resume=auto", "hydra.run.dir={files}/restored"],
         "loop.resume=auto: the run in {files}/restored finished at 300 steps and left no checkpoint to continue from (checkpoints/last.ckpt); the budget is now 600: choose a new hydra.run.dir",
         files={"restored": finished_run(seed=0, budget=300)}),
    Case("resume_changed_setting", ["algo=sac", "debug=fast", "data.path={data}", "loop.resume={earlier}",
                                    "policy.hidden=[16,16]"],
         "loop.resume: the checkpoint was made with policy.hidden=[32, 32], this run has policy.hidden=[16, 16]; resume with the same settings (or start a new run from it with loop.init_from)"),
    Case("resume_llm_from_mujoco_checkpoint", [*LLM, "loop.resume={ckpt}"],
         "loop.resume={ckpt} is not a checkpoint of an aihf language-model run"),
    Case("resume_truncated", [*MUJOCO, "algo=sac", "loop.resume={files}/cut.ckpt"],
         "loop.resume={files}/cut.ckpt cannot be read as a checkpoint (truncated, corrupt or not a torch checkpoint): PytorchStreamReader failed reading zip archive: failed finding central directory",
         files={"cut.ckpt": truncated("ckpt", 1000)}),
    Case("resume_in_its_dir_changed_setting", ["algo=sac", "debug=fast", "data.path={data}", "loop.resume={earlier}",
                                               "hydra.run.dir={earlier}", "policy.hidden=[16,16]"],
         "loop.resume: the checkpoint was made with policy.hidden=[32, 32], this run has policy.hidden=[16, 16]; resume with the same settings (or start a new run from it with loop.init_from)"),
    Case("anchors_equal", [*MUJOCO, "env.expert_return=5", "env.random_return=5"],
         "env.expert_return / env.random_return: expert and random returns are both 5.0; the normalised score "
         "(R - R_random) / (R_expert - R_random) needs two different anchors"),
    # -- output directories -----------------------------------------------------------------------------------
    Case("run_dir_of_earlier_run", [*MUJOCO, "hydra.run.dir={earlier}"],
         "{earlier} holds another run's outputs (metrics.json, csv/metrics.csv, checkpoints): choose a new hydra.run.dir, or continue that run with loop.resume={earlier}"),
    Case("run_dir_under_a_file", [*MUJOCO, "hydra.run.dir={files}/afile/run"],
         "hydra.run.dir={files}/afile/run cannot be created: {files}/afile is a file", files={"afile": text("x")}),
    Case("collect_output_exists", ["task=collect", "collect.ladder_dir={files}", "collect.output={data}"],
         "collect.output={data} already exists: nothing was overwritten; choose another path"),
    Case("collect_without_ladder", ["task=collect", "collect.output={files}/new.npz"],
         "task=collect needs collect.ladder_dir=<run>/ladder and collect.output=<file>.npz"),
]


# -- running the catalogue -----------------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict:
    """Every file under the roots (earlier runs, the cases' inputs, the shared datasets) with its bytes and
    modification time, and every folder."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "folder"
            for root in roots for p in root.rglob("*")}


@pytest.fixture(scope="module")
def world(hopper_data, sort_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("catalogue")
    runs = {"earlier": ["env=hopper", f"data.path={hopper_data}"], "cheetah": ["env=halfcheetah"]}
    for name, extra in runs.items():
        code, _, err = run_cli(["algo=sac", "debug=fast", *extra, "loop.total_env_steps=200",
                                "policy.learning_starts=100", "loop.torch_threads=1",
                                "trainer.enable_checkpointing=true", f"hydra.run.dir={root / name}"], root)
        assert code == 0, err[-2000:]
    return {"root": root, "data": str(hopper_data), "data_path": hopper_data, "sort": str(sort_data),
            "earlier": str(root / "earlier"), "ckpt": str(root / "earlier" / "checkpoints" / "last.ckpt"),
            "cheetah_ckpt": str(root / "cheetah" / "checkpoints" / "last.ckpt")}


def fill(text: str, values: dict) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, world):
    root = world["root"]
    files = root / "files" / case.id
    files.mkdir(parents=True)
    values = {**world, "files": files}
    for name, write in case.files.items():
        write(files / name, world)
    args = [fill(a, values) for a in case.args]
    run_dir = root / "runs" / case.id
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    watched = (root, world["data_path"].parent, Path(world["sort"]))
    before = snapshot(*watched)
    code, out, err = run_cli(args, root)
    assert (code, err.strip().splitlines()) == (case.code, [f"error: {fill(case.message or '', values)}"]), out[-1500:]
    assert not run_dir.exists()
    assert snapshot(*watched) == before  # earlier runs, inputs and data byte for byte; nothing new anywhere


# -- docs/errors.md ------------------------------------------------------------------------------------------------
PLACEHOLDERS = {"data": "<data.npz>", "sort": "<sort>", "files": "<dir>", "earlier": "<earlier run>",
                "ckpt": "<earlier run>/checkpoints/last.ckpt", "cheetah_ckpt": "<HalfCheetah run>/checkpoints/last.ckpt"}


def render() -> str:
    rows = ["# Bad input and what aihf says",
            "",
            "Every row is a case of `tests/test_catalogue.py`, which runs it through `run.py`'s own path and checks the",
            "exact message (printed as `error: <message>` on stderr), the exit code, that no run directory was left",
            "and that an earlier run's directory beside it is byte-identical afterwards. Base settings: a short MuJoCo",
            "run (`" + " ".join(fill(a, PLACEHOLDERS) for a in MUJOCO) + "`) or a tiny language-model run (`domain=llm "
            "algo=sft` on the sort task); the input column shows what each case adds. Regenerate this page with",
            "`python tests/test_catalogue.py`.",
            "",
            "Exit codes: 2 = refused before training (nothing written), 3 = training diverged (see README), 0 = done.",
            "",
            "| case | input | message | exit |",
            "|---|---|---|---|"]
    for c in CASES:
        base = MUJOCO if c.args[:len(MUJOCO)] == MUJOCO else LLM if c.args[:len(LLM)] == LLM else []
        extra = " ".join(fill(a, PLACEHOLDERS) for a in c.args[len(base):])
        kind = "MuJoCo" if base is MUJOCO else "LLM" if base is LLM else ""
        files = ", ".join(f"`<dir>/{n}`" for n in c.files)
        message = fill(c.message or "", PLACEHOLDERS).replace("|", "\\|")
        rows.append(f"| {c.id.replace('_', ' ')} | {kind} `{extra}`{' with ' + files if files else ''} | "
                    f"{message} | {c.code} |")
    return "\n".join(rows) + "\n"


def test_docs_errors_md_is_the_catalogue():
    assert (ROOT / "docs" / "errors.md").read_text() == render(), "regenerate with python tests/test_catalogue.py"


if __name__ == "__main__":
    (ROOT / "docs" / "errors.md").write_text(render())
    print(f"wrote {ROOT / 'docs' / 'errors.md'} ({len(CASES)} cases)")
