"""Language-model bugs found in review, each pinned: a reward head built for the policy actually loaded, reward
truncation that keeps [CLS] and honours llm.data.prompt_truncation, a fixed π_ref for self-play's DPO term,
held-out prompts disjoint from training prompts, and paths that resolve from any working directory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aihf.errors import ConfigError
from aihf.llm import data as llm_data
from aihf.llm.data_mix import drop_seen_prompts, split_by_prompt
from aihf.llm.module import LLMAIHF
from conftest import fit, llm_cfg

ROOT = Path(__file__).resolve().parents[1]


def _save_tiny_llama(folder: Path, texts: list[str], hidden: int = 48):
    """A 'pretrained' causal LM folder whose sizes differ from the llm.policy.* tiny-model keys."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    from aihf.llm.models import build_tokenizer
    tok = build_tokenizer(SimpleNamespace(kind="wordlevel", vocab_size=100), texts)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def _texts(sort_data: Path) -> list[str]:
    rows = [json.loads(line) for f in sort_data.glob("*.jsonl") for line in f.read_text().splitlines()]
    return [" ".join(str(v) for k, v in r.items() if k in ("prompt", "response", "chosen", "rejected")) for r in rows]


def test_tiny_head_reward_is_built_for_a_pretrained_policy(sort_data, tmp_path):
    """llm_reward=tiny_head on a loaded policy of other sizes than llm.policy.hidden_size: the reward head sits on
    the loaded policy's architecture and starts from its transformer (it used to crash after the SFT stage)."""
    _save_tiny_llama(tmp_path / "model", _texts(sort_data))
    model = tmp_path / "model"
    cfg = llm_cfg("rlhf", sort_data, tmp_path / "run", [f"llm.policy.name_or_path={model}", "llm.tokenizer.kind=pretrained",
                                                       f"llm.tokenizer.name_or_path={model}", "llm.policy.hidden_size=32",
                                                       "algo.bc_warmstart_steps=1", "algo.reward_pretrain_steps=1",
                                                       "llm.train.policy_steps=1"])
    module = LLMAIHF(cfg)
    assert module.reward.model.config.hidden_size == 48
    fit(module, tmp_path)
    # after one SFT step the reward's transformer was copied from the policy's, then fitted: same shapes throughout
    assert module.reward.backbone_mismatch(module.policy) is None


def test_reward_backbone_mismatch_is_named():
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
    from aihf.llm.models import ScalarReward
    small = dict(vocab_size=20, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    policy = LlamaForCausalLM(LlamaConfig(hidden_size=16, **small))
    reward = ScalarReward.__new__(ScalarReward)
    torch.nn.Module.__init__(reward)
    reward.model = LlamaForSequenceClassification(LlamaConfig(hidden_size=8, num_labels=1, **small))
    assert reward.backbone_mismatch(policy) == \
        "embed_tokens.weight has shape (20, 8) in the reward, (20, 16) in the policy"


def _bert_tokenizer(texts: list[str]):
    """A BERT-style tokenizer ([CLS] … [SEP], no eos), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.train_from_iterator(texts, trainer=trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", core.token_to_id("[CLS]")),
                                                 ("[SEP]", core.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def test_left_truncation_keeps_the_leading_cls_token():
    tok = _bert_tokenizer(["sort 1 2 3 4 5 6 7 8 9 ="])
    enc = llm_data.Encoder(tok, max_length=10, max_prompt_length=5, prompt_truncation="left")
    ids = enc.prompt("sort 1 2 3 4 5 6 7 8 9 =")
    assert ids[0] == tok.cls_token_id and len(ids) == 5
    assert tok.convert_ids_to_tokens(ids[1:]) == ["7", "8", "9", "="]  # the prompt's last tokens, [SEP] dropped
    short = enc.prompt("sort 1 2 =")
    assert tok.convert_ids_to_tokens(short) == ["[CLS]", "sort", "1", "2", "="]


def _save_tiny_bert(folder: Path, texts: list[str]):
    from transformers import BertConfig, BertForSequenceClassification
    tok = _bert_tokenizer(texts)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32, num_labels=1,
                                             pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)


def test_reward_encoder_honours_prompt_truncation(sort_data, tmp_path):
    """A reward with its own tokenizer: prompt_truncation=error is an error naming the reward's limit (it used to
    truncate from the left silently); =left keeps [CLS] first."""
    _save_tiny_bert(tmp_path / "bert", _texts(sort_data))
    reward = [f"llm.reward.name_or_path={tmp_path / 'bert'}", "llm.reward.init_from_policy=false",
              "llm.reward.max_length=6"]
    with pytest.raises(ConfigError, match=r"prompt has \d+ tokens > llm.reward.max_length - 1=5"):
        LLMAIHF(llm_cfg("rlhf", sort_data, tmp_path / "a", [*reward, "llm.data.prompt_truncation=error"]))
    module = LLMAIHF(llm_cfg("rlhf", sort_data, tmp_path / "b", [*reward, "llm.data.prompt_truncation=left"]))
    cls = module.reward.tokenizer.cls_token_id
    assert all(p["prompt"][0] == cls and len(p["prompt"]) <= 5 for p in module.reward_data["prefs"])


def test_selfplay_dpo_term_uses_the_fixed_reference(sort_data, tmp_path):
    """aihf_selfplay refreshes its opponent every step here; its DPO term must still compare π with the SFT policy."""
    cfg = llm_cfg("aihf_selfplay", sort_data, tmp_path, ["algo.bc_warmstart_steps=2", "algo.reference_refresh_every=1",
                                                         "llm.train.policy_steps=3"])
    module = LLMAIHF(cfg)
    fit(module, tmp_path)
    prefs = module.data["prefs"][:4]
    prompts, chosen, rejected = [p["prompt"] for p in prefs], [p["chosen"] for p in prefs], [p["rejected"] for p in prefs]
    with torch.no_grad():
        (pc, _), _ = module.pair_logps(module.policy, prompts, chosen, rejected)
        (ac, _), _ = module.pair_logps(module.anchor, prompts, chosen, rejected)
        (oc, _), _ = module.pair_logps(module.reference, prompts, chosen, rejected)
        demos = module.data["demos"][:4]
        _, metrics = module.implicit_objective(demos, prefs, module.sample(module.reference, [d["prompt"] for d in demos]))
    assert not torch.allclose(ac, oc)  # the opponent has moved away from π_ref
    assert torch.allclose(metrics["rewards/chosen"], (cfg.algo.beta * (pc - ac)).mean(), atol=1e-6)


def test_shipped_generator_holds_out_unseen_prompts(tmp_path):
    from aihf.llm.sort_task import build
    build(tmp_path / "sort", num_demos=300, num_prefs=300, num_heldout_prefs=50, num_heldout_demos=50,
          num_eval_prompts=50)
    rows = {f.stem: [json.loads(line) for line in f.read_text().splitlines()] for f in (tmp_path / "sort").glob("*.jsonl")}
    train = {r["prompt"] for r in rows["demos"] + rows["prefs"]}
    for part in ("heldout_demos", "heldout_prefs", "eval_prompts"):
        assert not train & {r["prompt"] for r in rows[part]}, part


def test_heldout_rows_with_a_training_prompt_are_left_out(sort_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sort_data, data)
    train_prompt = json.loads((data / "demos.jsonl").read_text().splitlines()[0])["prompt"]
    with open(data / "eval_prompts.jsonl", "a") as fh:
        fh.write(json.dumps({"prompt": train_prompt}) + "\n")
    module = LLMAIHF(llm_cfg("sft", data, tmp_path / "run"))
    assert train_prompt not in module.text["eval_prompts"]
    assert module.dropped_overlap == {"eval_prompts": 1}
    parts = {"demos": [{"prompt": "a"}], "prefs": [{"prompt": "b"}], "heldout_demos": [{"prompt": "a"}, {"prompt": "c"}],
             "heldout_prefs": [{"prompt": "b"}], "eval_prompts": ["c", "a"]}
    assert drop_seen_prompts(parts) == {"heldout_demos": 1, "heldout_prefs": 1, "eval_prompts": 1}
    assert parts["heldout_demos"] == [{"prompt": "c"}] and parts["eval_prompts"] == ["c"]


def test_fraction_split_never_shares_a_prompt():
    pairs = [{"prompt": f"p{i % 40}", "chosen": str(i), "rejected": "x"} for i in range(200)]  # 5 pairs per prompt
    held, train = split_by_prompt(pairs, 0.2, 1000)
    assert len(held) == 40 and len(train) == 160
    assert not {p["prompt"] for p in held} & {p["prompt"] for p in train}
    held, _ = split_by_prompt(pairs, 0.2, 12)  # the cap counts pairs
    assert len(held) == 10
    again, other = split_by_prompt(pairs, 0.2, 1000), split_by_prompt(pairs, 0.2, 1000, seed=1)
    assert again == split_by_prompt(pairs, 0.2, 1000, seed=0)  # the split is its seed's, not the run's
    assert {p["prompt"] for p in other[0]} != {p["prompt"] for p in again[0]}
    assert not {p["prompt"] for p in other[0]} & {p["prompt"] for p in other[1]}


def test_shipped_paths_resolve_from_another_directory(tmp_path):
    """`llm_data=sort` names data/llm/sort/... relative to the project: a run typed in another directory finds it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "domain=llm", "algo=sft", "algo.bc_warmstart_steps=1",
                           "llm.train.policy_steps=1", "llm.train.eval_prompts=2", "llm.data.num_heldout=4",
                           "llm.policy.hidden_size=16", "trainer.enable_progress_bar=false",
                           "trainer.enable_checkpointing=false", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_demos"] == 1000 and metrics["status"] == "finished"


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_reward_step_clips_its_gradient_norm(clip, sort_data, tmp_path, monkeypatch):
    """llm.reward.grad_clip bounds the norm that the reward optimiser steps with (0: the raw gradient)."""
    module = LLMAIHF(llm_cfg("rm", sort_data, tmp_path, ["llm.train.policy_steps=4",
                                                          f"llm.reward.grad_clip={clip}"]))
    seen = []
    step = torch.optim.AdamW.step

    def recording_step(opt, *args, **kwargs):
        if any(p is q for p in module.reward.parameters() for g in opt.param_groups for q in g["params"]):
            seen.append(float(torch.linalg.vector_norm(torch.stack(
                [q.grad.norm() for g in opt.param_groups for q in g["params"] if q.grad is not None]))))
        return step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    fit(module, tmp_path)
    assert len(seen) == module.reward_updates > 0
    if clip:
        assert max(seen) <= clip * (1 + 1e-4)
    else:
        assert min(seen) > 1e-2  # the unclipped norms are far above the clip tested above
