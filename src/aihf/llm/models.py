"""Policy, reference and reward models: by Hugging Face name or local path, or built from a config (tiny models
for CPU work), each with a tokenizer the project can build offline when none is named."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

import torch
from safetensors import SafetensorError
from torch import nn

from aihf.errors import ConfigError
from aihf.paths import resolve

log = logging.getLogger("aihf")
SPECIALS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}


def _load(loader, name_or_path: str, key: str, **kwargs):
    """`loader.from_pretrained` with its failure (a folder without the files it needs, a broken file) in one line."""
    name_or_path = resolve(name_or_path)
    _check_source(name_or_path, key)
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{key}={name_or_path!r} cannot be loaded: {first}") from None


def _check_source(name_or_path: str | None, key: str) -> None:
    """A path that looks local must exist; a hub name needs the network, which HF_HUB_OFFLINE=1 rules out."""
    if not name_or_path:
        raise ConfigError(f"{key} is not set: give a model or tokenizer folder (or a hub name when online)")
    looks_local = name_or_path.startswith((".", "/", "~")) or os.path.sep in name_or_path.strip("/").split("/", 1)[-1]
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not any(path.iterdir()):
        raise ConfigError(f"{key}={name_or_path!r} is an empty directory (expected a saved model or tokenizer)")
    if path.exists():
        return
    if looks_local or name_or_path.count("/") > 1:
        raise ConfigError(f"{key}={name_or_path!r}: no such file or directory")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"{key}={name_or_path!r} is not a local path and HF_HUB_OFFLINE=1 forbids the hub: "
                          f"give a local model folder (see docs/llm.md for preparing one)")


def build_tokenizer(cfg, texts: Iterable[str]):
    """cfg: llm.tokenizer. kind=wordlevel|bytelevel_bpe trains on the task's own text; kind=pretrained loads a name or path."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    if cfg.kind == "pretrained":
        tok = _load(AutoTokenizer, cfg.name_or_path, "llm.tokenizer.name_or_path")
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
        specials = list(SPECIALS.values())
        if cfg.kind == "wordlevel":
            core = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk_token"]))
            core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
            trainer = trainers.WordLevelTrainer(special_tokens=specials, vocab_size=cfg.vocab_size)
        elif cfg.kind == "bytelevel_bpe":
            core = Tokenizer(models.BPE())
            core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            core.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(special_tokens=specials, vocab_size=cfg.vocab_size,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        else:
            raise ConfigError(f"llm.tokenizer.kind={cfg.kind!r}: expected wordlevel, bytelevel_bpe or pretrained")
        # Sorted so the vocabulary (and so a resumed run's token ids) does not depend on data order.
        core.train_from_iterator(sorted(set(texts)), trainer=trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIALS)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"tokenizer {cfg.name_or_path!r} has neither a pad nor an eos token: set one in its "
                              f"tokenizer_config.json")
        # Safe because every loss masks padding by the attention mask, never by token id.
        log.info("tokenizer has no pad token; using its eos token %r for padding", tok.eos_token)
        tok.pad_token = tok.eos_token
    return tok


def _tiny_config(cfg, tok, arch: str):
    from transformers import GPT2Config, LlamaConfig
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(f"llm.policy.hidden_size={cfg.hidden_size} is not divisible by "
                          f"llm.policy.num_heads={cfg.num_heads}: each attention head gets hidden_size / num_heads")
    if arch == "llama" and (cfg.hidden_size // cfg.num_heads) % 2:
        raise ConfigError(f"llm.policy.hidden_size / llm.policy.num_heads = {cfg.hidden_size // cfg.num_heads}: "
                          f"Llama's rotary embeddings need an even size per head")
    if arch == "llama":
        return LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
                           num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                           num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.max_positions,
                           tie_word_embeddings=True, **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=len(tok), n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                          n_positions=cfg.max_positions, **ids)
    raise ConfigError(f"llm.policy.arch={arch!r}: expected llama or gpt2 for a model built from a config")


def causal_lm(tokenizer, name_or_path: str | None = None, gguf_file: str | None = None, arch: str = "llama",
              hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, max_positions: int = 64,
              gradient_checkpointing: bool = False, lora_r: int = 0, lora_alpha: float = 16.0,
              lora_dropout: float = 0.0, lora_target_modules="all-linear", **_optimiser) -> nn.Module:
    """The default policy builder (llm.policy._target_): a causal LM by name/path, or a tiny one from a config
    (random weights); LoRA-wrapped by peft when lora_r > 0. The optimiser's keys (lr, ...) are the module's."""
    from transformers import AutoModelForCausalLM
    cfg = SimpleNamespace(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                          max_positions=max_positions)
    if name_or_path:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        model = _load(AutoModelForCausalLM, name_or_path, "llm.policy.name_or_path", dtype=torch.float32, **kwargs)
    else:
        model = AutoModelForCausalLM.from_config(_tiny_config(cfg, tokenizer, arch))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is built for generation only; checkpointed training needs none
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model
        targets = lora_target_modules if isinstance(lora_target_modules, str) else list(lora_target_modules)
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    return model


def _import_callable(target: str):
    """The callable a dotted path names (module path, then attributes), or None."""
    import importlib
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj if callable(obj) else None
    return None


def build(node, key: str, default: str, **kwargs):
    """A component from its config node, as `hydra.utils.instantiate` would build it (its `_target_`, else
    `default`, called with the node's keys and the objects it is built for: a tokenizer, the policy), with a target
    that cannot be imported or does not take those arguments refused in one line naming the key. (instantiate itself
    would route the policy and tokenizer objects through OmegaConf.)"""
    from omegaconf import OmegaConf
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = node.pop("_target_", None) or default
    fn = _import_callable(target)
    if fn is None:
        raise ConfigError(f"{key}._target_={target!r} cannot be imported (expected a dotted path to a callable)")
    try:
        return fn(**node, **kwargs)
    except TypeError as exc:
        if exc.__traceback__.tb_next is None:  # raised binding the arguments, not inside the target
            raise ConfigError(f"{key}._target_={target} does not take this run's arguments: {exc}") from None
        raise


def build_policy(cfg, tok) -> nn.Module:
    """cfg: llm.policy (its `_target_`, the default causal_lm when absent), built for tokenizer `tok`."""
    return build(cfg, "llm.policy", "aihf.llm.models.causal_lm", tokenizer=tok)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def frozen_copy(policy: nn.Module) -> nn.Module:
    """π_ref: a frozen copy of the policy, or for a LoRA policy its base model with the adapter switched off (the
    default llm.reference._target_)."""
    if is_lora(policy):
        return AdapterDisabled(policy)
    ref = copy.deepcopy(policy)
    ref.requires_grad_(False)
    ref.eval()
    return ref


class AdapterDisabled:
    """A LoRA policy's base model as a model of its own (the reference): the policy's weights with its adapter
    switched off and in eval mode, so there is no second copy of the weights. Not an nn.Module on purpose: it
    owns no parameters, so it adds nothing to the checkpoint."""

    def __init__(self, policy: nn.Module):
        self.policy = policy
        self.training = False

    def _run(self, fn, **kwargs):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter(), torch.no_grad():
                return fn(**kwargs)
        finally:
            self.policy.train(was_training)

    def __call__(self, **kwargs):
        return self._run(self.policy, **kwargs)

    def generate(self, **kwargs):
        return self._run(self.policy.generate, **kwargs)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def base_model(model):
    """The transformers model that a policy or reference runs: through a LoRA reference (AdapterDisabled) and a
    PEFT wrapper."""
    if isinstance(model, AdapterDisabled):
        model = model.policy
    return model.get_base_model() if is_lora(model) else model


def merge_adapter_into_base(model: nn.Module) -> None:
    """Fold the LoRA adapter into the base weights and restart it from zero (B = 0): the policy is unchanged, and
    its adapter-disabled base is now this policy (π_ref ← π without copying). The parameters stay the same
    objects, so the optimiser keeps them."""
    from peft.tuners.lora import LoraLayer
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in module.active_adapters:
                module.merge(adapter_names=[name])
                module.merged_adapters = []  # the merge is permanent: the adapter applies again, from zero
                module.reset_lora_parameters(name, init_lora_weights=True)


def plain_state_dict(module: nn.Module) -> dict:
    """A module's weights under their names without LoRA (base_layer. dropped, adapter weights left out)."""
    return {k.replace(".base_layer", ""): v for k, v in module.state_dict().items() if "lora_" not in k}


class ScalarReward(nn.Module):
    """An explicit reward r_φ(x, y): a scalar head on a sequence model, reading the last non-padding token.

    Either an `AutoModelForSequenceClassification` by name or path (num_labels=1; an encoder such as MiniLM gets a
    fresh head), or one built from a config like the tiny policy. It has its own tokenizer, so the policy and the
    reward may tokenise differently; texts are the interface between them.
    """

    def __init__(self, policy: nn.Module, policy_tokenizer, name_or_path: str | None = None, max_length: int = 512,
                 **_training):
        super().__init__()
        from transformers import AutoModelForSequenceClassification
        if name_or_path:
            self.model = _load(AutoModelForSequenceClassification, name_or_path, "llm.reward.name_or_path",
                               num_labels=1, dtype=torch.float32)
            self.tokenizer = build_tokenizer(_PretrainedTok(name_or_path), [])
            self.same_tokenizer = False
        else:
            # Built for the policy actually loaded (a pretrained one too), so that its transformer can start from
            # the policy's: a head on the policy's own architecture and sizes.
            self.tokenizer = policy_tokenizer
            config = copy.deepcopy(policy.config)
            config.num_labels = 1
            self.model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
            self.same_tokenizer = True
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length

    @staticmethod
    def _transformer(model: nn.Module):
        base = base_model(model)
        return getattr(base, base.base_model_prefix, None)

    def backbone_mismatch(self, policy: nn.Module) -> str | None:
        """Why the reward's transformer cannot start from the policy's (None when it can)."""
        src, dst = self._transformer(policy), self._transformer(self.model)
        if src is None or dst is None or type(src) is not type(dst):
            return (f"the reward's transformer ({type(dst).__name__}) is not the policy's "
                    f"({type(src).__name__})")
        theirs = {k: tuple(v.shape) for k, v in plain_state_dict(src).items()}
        for name, tensor in dst.state_dict().items():
            if theirs.get(name) != tuple(tensor.shape):
                return f"{name} has shape {tuple(tensor.shape)} in the reward, {theirs.get(name)} in the policy"
        return None

    def init_backbone_from(self, policy: nn.Module) -> None:
        """Start the reward from the policy's transformer (the RM-from-SFT recipe; a LoRA policy's merged weights);
        shapes are checked at start-up."""
        self._transformer(self.model).load_state_dict(plain_state_dict(self._transformer(policy)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()


class _PretrainedTok:
    kind = "pretrained"

    def __init__(self, name_or_path: str):
        self.name_or_path = name_or_path
