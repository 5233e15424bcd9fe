"""π_ref's log-probs of the preference pairs, computed once instead of at every step (`llm.train.reference_logps=
precomputed`), and kept on disk by fingerprint (`llm.train.reference_cache_dir`) for every later run that has the
same reference and the same tokens.

π_ref is frozen for the whole main stage, so log π_ref(y|x) of a training pair is the same number at every epoch:
the DPO step then runs the policy only (one forward and backward where there were two forwards and a backward). The
fingerprint covers what the numbers depend on: the reference's weights, its class and model config (rotary settings,
attention implementation, ...), the component that built it, the token ids of every pair, the padding id, the
precision and the torch and transformers versions; a cache file is used only under an equal fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from aihf.paths import written_whole

log = logging.getLogger(__name__)
FORMAT = 1  # bumped whenever the way the numbers are computed changes


def weights_digest(model) -> str:
    """sha256 of a model's weights (names, dtypes, shapes, bytes); a LoRA reference: its base weights."""
    from aihf.llm.models import AdapterDisabled, plain_state_dict
    state = plain_state_dict(model.policy) if isinstance(model, AdapterDisabled) else model.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_config(model) -> str:
    """The transformers config of the model a reference runs (through a PEFT or reference wrapper), as JSON."""
    from aihf.llm.models import base_model
    base = base_model(model)
    config = getattr(base, "config", None)
    return config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else type(base).__name__


def fingerprint(model, pairs: dict[str, list[dict]], settings: dict) -> str:
    import transformers

    from aihf.llm.models import base_model
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "reference": type(model).__qualname__,
                         "model": type(base_model(model)).__qualname__, "config": model_config(model),
                         "weights": weights_digest(model), "torch": torch.__version__,
                         "transformers": transformers.__version__, **settings}, sort_keys=True).encode())
    for part in sorted(pairs):
        h.update(part.encode())
        for p in pairs[part]:
            h.update(json.dumps([p["prompt"], p["chosen"], p["rejected"]]).encode())
    return h.hexdigest()[:32]


class ReferenceLogps:
    """log π_ref(chosen), log π_ref(rejected) of each pair of each data part: a (pairs, 2) float32 tensor per part."""

    def __init__(self, table: dict[str, torch.Tensor], key: str | None):
        self.table, self.key = table, key

    def pairs(self, part: str, idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.table[part][torch.as_tensor(idx, dtype=torch.long)].to(device)
        return rows[:, 0], rows[:, 1]

    @classmethod
    def build(cls, compute, model, pairs: dict[str, list[dict]], settings: dict, batch_size: int,
              cache_dir: str | None, write: bool = True) -> "ReferenceLogps":
        """`compute(prompts, chosen, rejected)` → (chosen log-probs, rejected log-probs) for one batch; the table
        is read from `cache_dir` when a file of the same fingerprint is there, else computed (and written)."""
        key = fingerprint(model, pairs, settings) if cache_dir else None  # hashing the weights only for a cache
        path = Path(cache_dir).expanduser() / f"{key}.pt" if cache_dir else None
        saved = None
        if path is not None and path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: computed again, and replaced
                log.warning("%s cannot be read (%s): the reference log-probs are computed again", path,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if saved is not None and saved.get("key") == key and set(saved["table"]) >= set(pairs):
            log.info("reference log-probs of %s read from %s", ", ".join(sorted(pairs)), path)
            return cls({p: saved["table"][p] for p in pairs}, key)
        table = {}
        with torch.no_grad():
            for part, rows in pairs.items():
                out = []
                for s in range(0, len(rows), batch_size):
                    chunk = rows[s:s + batch_size]
                    c, r = compute([p["prompt"] for p in chunk], [p["chosen"] for p in chunk],
                                   [p["rejected"] for p in chunk])
                    out.append(torch.stack([c, r], 1).float().cpu())
                table[part] = torch.cat(out) if out else torch.zeros(0, 2)
        if path is not None and write:
            path.parent.mkdir(parents=True, exist_ok=True)
            with written_whole(path) as tmp:  # renamed into place: never half a file
                torch.save({"key": key, "settings": settings, "table": table}, tmp)
            log.info("reference log-probs of %s written to %s", ", ".join(sorted(pairs)), path)
        return cls(table, key)
