"""The log-prob paths agree on a device: the fused head and packed rows against one row per response from the
model's logits, in fp32 and (on a GPU) bf16 autocast, values and gradients, for a tiny Llama and GPT-2.

    python bench/logp_paths_check.py --device cuda
"""

from __future__ import annotations

import argparse
import random

import torch


def tiny(arch: str, device: str):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig
    torch.manual_seed(0)
    config = (LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0)
              if arch == "llama" else
              GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=128, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1))
    return AutoModelForCausalLM.from_config(config).to(device).eval()


def main() -> None:
    from aihf.llm.sequences import packed_logps, response_logps
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    device = parser.parse_args().device
    rng = random.Random(0)
    prompts = [[rng.randrange(2, 512) for _ in range(rng.randrange(1, 40))] for _ in range(8)]
    answers = [[[rng.randrange(2, 512) for _ in range(rng.randrange(1, 30))] for _ in range(8)] for _ in range(2)]
    weights = torch.randn(16, generator=torch.Generator().manual_seed(1)).to(device)
    for arch in ("llama", "gpt2"):
        for dtype in ([torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]):
            model = tiny(arch, device)
            with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                rows, _ = response_logps(model, prompts * 2, answers[0] + answers[1], 0, device, fused=False)
                fused, _ = response_logps(model, prompts * 2, answers[0] + answers[1], 0, device)
                packed = torch.cat(packed_logps(model, prompts, answers, 0, device)[0])
            grads = [torch.autograd.grad((v * weights).sum(), list(model.parameters())) for v in (rows, fused, packed)]
            gap = lambda g: max(float((a - b).abs().max()) for a, b in zip(g, grads[0]))
            rows, fused, packed = rows.detach(), fused.detach(), packed.detach()
            print(f"{arch} {str(dtype)[6:]} on {device}: |fused - rows| {float((fused - rows).abs().max()):.2e} "
                  f"(grad {gap(grads[1]):.2e}), |packed - rows| {float((packed - rows).abs().max()):.2e} "
                  f"(grad {gap(grads[2]):.2e}); log-probs ~{float(rows.abs().mean()):.1f}")


if __name__ == "__main__":
    main()
