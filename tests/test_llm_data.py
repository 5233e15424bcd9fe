"""LLM data: the HH and chat adapters, the length rules, and bad input stopping the run before training with a
message that names the file, row or key."""

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aihf.errors import ConfigError
from aihf.llm import data as llm_data
from aihf.llm.module import LLMAIHF
from aihf.llm.sort_task import build, gold_reward
from conftest import llm_cfg

ROOT = Path(__file__).resolve().parents[1]


def test_gold_reward():
    assert gold_reward("sort 3 1 2 =", "1 2 3") == 1.0
    assert gold_reward("sort 3 1 2 =", "2 1 3") == pytest.approx(1 / 3)
    assert gold_reward("sort 3 1 2 =", "1 2") == pytest.approx(2 / 3 - 0.5 / 3)
    assert gold_reward("sort 3 1 2 =", "") == -0.5
    assert gold_reward("sort 3 1 2 =", " ".join("x" * 12)) == -1.0


def test_shipped_sort_data_is_reproduced_by_the_generator(tmp_path):
    build(tmp_path / "sort")
    for f in sorted((ROOT / "data" / "llm" / "sort").iterdir()):
        assert (tmp_path / "sort" / f.name).read_bytes() == f.read_bytes(), f.name
    meta = json.loads((tmp_path / "sort" / "meta.json").read_text())
    assert 0.7 < meta["expert_gold"] < 0.85  # good but clearly below the best achievable 1.0
    with pytest.raises(FileExistsError):
        build(tmp_path / "sort")


def test_hh_prompt_is_the_shared_prefix():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here is how."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: No."
    prompt, c, r = llm_data.split_hh(chosen, rejected)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:"
    assert (c, r) == (" Sure, here is how.", " No.")
    # Diverging at an earlier turn: the prompt stops at the last Assistant turn both share.
    early = "\n\nHuman: hi\n\nAssistant: go away\n\nHuman: help me\n\nAssistant: No."
    prompt, c, r = llm_data.split_hh(chosen, early)
    assert prompt == "\n\nHuman: hi\n\nAssistant:"
    assert c == " hello\n\nHuman: help me\n\nAssistant: Sure, here is how." and r.startswith(" go away")
    # Identical up to a prefix of the final response ("Sure" vs "Sure thing").
    prompt, c, r = llm_data.split_hh(chosen, chosen.replace("Sure, here is how.", "Sure thing"))
    assert prompt.endswith("help me\n\nAssistant:") and c == " Sure, here is how." and r == " Sure thing"


def _write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_hh_file_trains_a_reward_model(tmp_path):
    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: good answer {i}",
             "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}"} for i in range(20)]
    path = _write_jsonl(tmp_path / "hh.jsonl.gz", rows, gz=True)
    cfg = llm_cfg("rm", tmp_path, tmp_path / "run", [
        "llm.data.format=hh", f"llm.data.prefs={path}", "llm.data.demos=null", "llm.data.heldout_demos=null",
        "llm.data.heldout_prefs=null", "llm.data.eval_prompts=null", "llm.data.heldout_fraction=0.25",
        "llm.data.demos_from_prefs=true", "llm.data.gold=null", "llm.tokenizer.kind=bytelevel_bpe",
        "llm.tokenizer.vocab_size=400", "llm.data.max_length=48", "llm.data.max_prompt_length=24"])
    module = LLMAIHF(cfg)
    assert len(module.text["prefs"]) == 15 and len(module.text["heldout_prefs"]) == 5
    assert module.text["demos"][0]["response"].startswith(" good answer")
    assert module.text["prefs"][0]["prompt"].endswith("\n\nAssistant:")
    from conftest import fit
    fit(module, tmp_path)
    assert "eval/pref_accuracy" in module.final_metrics


def test_chat_messages_use_the_chat_template(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers
    core = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    row = {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}]}
    [pair] = llm_data.to_pairs([row], "chat", "x.jsonl", tok)
    assert pair == {"prompt": "<|user|> hi <|assistant|>", "chosen": "hello", "rejected": "go"}
    [demo] = llm_data.to_demos([{"messages": row["chosen"]}], "chat", "x.jsonl", tok)
    assert demo == {"prompt": "<|user|> hi <|assistant|>", "response": "hello"}
    bad = {"chosen": row["chosen"], "rejected": [{"role": "user", "content": "other"}, row["rejected"][1]]}
    with pytest.raises(ConfigError, match="row 1: chosen and rejected conversations differ"):
        llm_data.to_pairs([bad], "chat", "x.jsonl", tok)


def test_truncation_keeps_the_response_and_pads_generation_left():
    from aihf.llm.sequences import pad_left
    from types import SimpleNamespace
    from aihf.llm.models import build_tokenizer
    tok = build_tokenizer(SimpleNamespace(kind="wordlevel", vocab_size=100), ["a b c d e f g"])
    enc = llm_data.Encoder(tok, max_length=6, max_prompt_length=3, prompt_truncation="left")
    row = enc.demo({"prompt": "a b c d e", "response": "f g"}, "row 1")
    assert tok.convert_ids_to_tokens(row["prompt"]) == ["c", "d", "e"]  # the prompt's end is kept
    assert tok.convert_ids_to_tokens(row["response"]) == ["f", "g", "<eos>"]
    ids, attn = pad_left([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and attn.tolist() == [[1, 1], [0, 1]]


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.fixture
def data_copy(sort_data, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(sort_data, out)
    return out


def _error(algo, data, tmp_path, extra=()):
    with pytest.raises(ConfigError) as exc:
        LLMAIHF(llm_cfg(algo, data, tmp_path / "run", list(extra)))
    return str(exc.value)


def test_malformed_jsonl_line_names_file_and_line(data_copy, tmp_path):
    lines = (data_copy / "prefs.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-3]
    (data_copy / "prefs.jsonl").write_text("\n".join(lines) + "\n")
    msg = _error("dpo", data_copy, tmp_path)
    assert f"{data_copy / 'prefs.jsonl'}:7: malformed JSON" in msg


def test_missing_field_is_named(data_copy, tmp_path):
    rows = [json.loads(x) for x in (data_copy / "demos.jsonl").read_text().splitlines()]
    del rows[2]["response"]
    _write_jsonl(data_copy / "demos.jsonl", rows)
    assert "row 3: missing field 'response'" in _error("sft", data_copy, tmp_path)


def test_empty_response_is_refused(data_copy, tmp_path):
    rows = [json.loads(x) for x in (data_copy / "prefs.jsonl").read_text().splitlines()]
    rows[4]["rejected"] = "  "
    _write_jsonl(data_copy / "prefs.jsonl", rows)
    assert "row 5: empty rejected response" in _error("dpo", data_copy, tmp_path)


def test_prompt_longer_than_the_maximum_says_what_to_change(sort_data, tmp_path):
    msg = _error("sft", sort_data, tmp_path, ["llm.data.max_prompt_length=4"])
    assert "llm.data.max_prompt_length=4" in msg and "prompt_truncation=left" in msg


def test_model_path_that_does_not_exist(sort_data, tmp_path):
    msg = _error("sft", sort_data, tmp_path, [f"llm.policy.name_or_path={tmp_path / 'no-such-model'}"])
    assert "llm.policy.name_or_path" in msg and "no such file or directory" in msg
    msg = _error("sft", sort_data, tmp_path, ["llm.policy.name_or_path=someone/some-model"])
    assert "HF_HUB_OFFLINE=1" in msg


def test_tokenizer_without_pad_token_is_handled(sort_data, tmp_path):
    """A saved tokenizer with an eos but no pad token (GPT-2 style) pads with eos; losses mask by attention."""
    from types import SimpleNamespace
    from aihf.llm.models import build_tokenizer
    tok = build_tokenizer(SimpleNamespace(kind="wordlevel", vocab_size=100), ["sort 1 2 3 ="])
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    cfg = llm_cfg("sft", sort_data, tmp_path / "run", ["llm.tokenizer.kind=pretrained",
                                                      f"llm.tokenizer.name_or_path={tmp_path / 'tok'}"])
    module = LLMAIHF(cfg)
    assert module.tokenizer.pad_token_id == module.tokenizer.eos_token_id


def test_mujoco_preset_with_llm_domain_is_refused(sort_data, tmp_path):
    assert "algo.reward_source='env'" in _error("sac", sort_data, tmp_path)


def test_run_py_reports_bad_data_in_one_line_and_keeps_earlier_output(data_copy, tmp_path):
    """Bad data: one line and exit 2, nothing of the run written. (An earlier run's directory is refused before
    the data is even read: tests/test_run_dir.py.)"""
    run_dir = tmp_path / "run"
    (data_copy / "demos.jsonl").write_text("{not json\n")
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "domain=llm", "algo=sft",
                           f"llm.data.demos={data_copy / 'demos.jsonl'}", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ,
                                                                         "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: llm.data.demos: {data_copy / 'demos.jsonl'}:1: malformed JSON")
    assert not run_dir.exists()

def _drawn(sort_data, tmp_path, *extra):
    from aihf.llm.data_mix import load_text
    cfg = llm_cfg("aihf", sort_data, tmp_path, ["llm.data.num_demos=20", *extra])
    text, _, subset, _ = load_text(cfg, None, True, True)
    return text, subset


def test_each_seed_draws_its_own_pairs_and_demonstrations(sort_data, tmp_path):
    """llm.data.subset=random (the default): which N pairs and demonstrations a run trains on is drawn with its
    seed, the same for every preset at that seed, nested across N, fixed by subset_seed; `first` is the old rule."""
    rows = [json.loads(line) for line in (sort_data / "prefs.jsonl").read_text().splitlines()]
    demos = [json.loads(line) for line in (sort_data / "demos.jsonl").read_text().splitlines()]
    pairs = lambda text: [(p["prompt"], p["chosen"], p["rejected"]) for p in text["prefs"]]  # noqa: E731
    s0, sub0 = _drawn(sort_data, tmp_path, "llm.data.num_prefs=16", "seed=0")
    s1, sub1 = _drawn(sort_data, tmp_path, "llm.data.num_prefs=16", "seed=1")
    assert len(s0["prefs"]) == len(s1["prefs"]) == 16 and pairs(s0) != pairs(s1)
    assert s0["demos"] != s1["demos"] and len(s0["demos"]) == 20
    assert sub0["rule"] == "random" and sub0["seed"] == 0 and sub0["num_prefs"] == sorted(sub0["num_prefs"])
    assert pairs(s0) == [(rows[i]["prompt"], rows[i]["chosen"], rows[i]["rejected"]) for i in sub0["num_prefs"]]
    assert [d["response"] for d in s0["demos"]] == [demos[i]["response"] for i in sub0["num_demos"]]
    small, sub_small = _drawn(sort_data, tmp_path, "llm.data.num_prefs=8", "seed=0")
    assert set(sub_small["num_prefs"]) < set(sub0["num_prefs"])  # the scarce set is part of the ample one
    fixed_a, _ = _drawn(sort_data, tmp_path, "llm.data.num_prefs=16", "seed=0", "llm.data.subset_seed=7")
    fixed_b, _ = _drawn(sort_data, tmp_path, "llm.data.num_prefs=16", "seed=3", "llm.data.subset_seed=7")
    assert pairs(fixed_a) == pairs(fixed_b) != pairs(s0)
    first, sub_first = _drawn(sort_data, tmp_path, "llm.data.num_prefs=16", "seed=1", "llm.data.subset=first")
    assert sub_first == {"rule": "first", "seed": None, "num_prefs": list(range(16)), "num_demos": list(range(20))}
    assert pairs(first) == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows[:16]]
    every, _ = _drawn(sort_data, tmp_path, f"llm.data.num_prefs={len(rows)}", "seed=1")
    assert pairs(every) == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]  # all of them, in file order


def test_draws_at_one_seed_share_the_tokenizer_the_initial_policy_and_the_evaluation(sort_data, tmp_path):
    """A word-level tokenizer's ids follow token frequencies: trained on the drawn rows, it would differ between
    pair counts, and so would π_ref's initialisation at one seed. It is trained on the pool the rows are drawn
    from (the first-N rule keeps the old corpus, which does follow the draw)."""
    import pytorch_lightning as pl

    def built(n, *extra):
        pl.seed_everything(0, verbose=False)
        return LLMAIHF(llm_cfg("dpo", sort_data, tmp_path / f"{n}{extra}", [f"llm.data.num_prefs={n}", *extra]))
    few, many = built(4), built(48)
    assert few.tokenizer.get_vocab() == many.tokenizer.get_vocab()
    assert all(torch.equal(a, b) for a, b in zip(few.policy.state_dict().values(), many.policy.state_dict().values()))
    assert few.text["heldout_prefs"] == many.text["heldout_prefs"]
    assert few.text["eval_prompts"] == many.text["eval_prompts"]
    first = [built(n, "llm.data.subset=first").tokenizer.get_vocab() for n in (4, 48)]
    assert first[0] != first[1]


def test_sort_baselines_against_a_hand_computation(sort_data):
    from aihf.llm.sort_task import baselines, parse_prompt
    out = baselines(sort_data, draws=5)
    lengths = [len(parse_prompt(json.loads(line)["prompt"]))
               for line in (sort_data / "eval_prompts.jsonl").read_text().splitlines()]
    # the demonstrator's mode swaps the last two of 5 or more digits: n − 2 of n positions right
    assert out["demonstrator_mode"] == pytest.approx(sum((n - 2) / n if n >= 5 else 1.0 for n in lengths) / len(lengths))
    assert out["exact_sort"] == 1.0 and out["copy_prompt"] < out["demonstrator_sampled"] < out["demonstrator_mode"]
    assert 0.5 < out["heldout_labels_agreeing_with_gold"] <= 1.0
