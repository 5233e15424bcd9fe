#!/usr/bin/env bash
# Every GPU check of the language-model domain (issue 9, docs/llm.md), in one script for a lent GPU machine:
#   0. the log-prob paths (fused head, packed rows) against one row per response from the logits, fp32 and bf16;
#   1. DPO against TRL's DPOTrainer on the GPU (bench/dpo_throughput.py): tiny Llama 8×1024, batch 64, fp32 and bf16,
#      activation checkpointing off and on on both sides; LoRA r=16 beside full fine-tuning (bf16);
#   2. the dpo preset end to end under trainer=gpu (bf16-mixed) and trainer=fsdp (Lightning's FSDPStrategy, the
#      GPUs there are), each ending with its metrics.json.
# SmolLM2-135M is not among them: its folder (540 MB) is larger than what travels to the device machine.
# Results go to $OUT (or ./gpu_checks_llm). Needs, beside the machine's torch/transformers/peft/lightning: hydra-core,
# omegaconf, antlr4, datasets (dill, multiprocess, xxhash) and trl, carried as Python 3.12 wheels.
# Test it on a CPU with: DEVICE=cpu LAYERS=2 HIDDEN=128 BATCH=8 STEPS=4 bash bench/gpu_checks_llm.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
DEVICE=${DEVICE:-cuda}; TRAINER=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu)
LAYERS=${LAYERS:-8}; HIDDEN=${HIDDEN:-1024}; BATCH=${BATCH:-64}; STEPS=${STEPS:-30}
OUT=${OUT:-gpu_checks_llm}; mkdir -p "$OUT"; RUNS=$(mktemp -d)
(nvidia-smi -L || lscpu | grep "Model name") 2>&1 | tee "$OUT/device.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/device.txt"

python bench/logp_paths_check.py --device $DEVICE 2>&1 | grep -v -i warn | tee "$OUT/logp_paths.txt"  # fused, packed, rows

BENCH="python bench/dpo_throughput.py --model tiny --layers $LAYERS --hidden $HIDDEN --batch-size $BATCH --steps $STEPS --device $DEVICE"
for precision in fp32 bf16; do
  [ "$DEVICE" = cpu ] && [ "$precision" = bf16 ] && continue
  $BENCH --precision $precision 2>&1 | grep -v -i warn | tail -7 | tee "$OUT/dpo_$precision.txt"
done
$BENCH --precision $([ "$DEVICE" = cpu ] && echo fp32 || echo bf16) --lora 16 --checkpointing off 2>&1 \
  | grep -v -i warn | tail -6 | tee "$OUT/dpo_lora.txt"

RUN="python run.py domain=llm algo=dpo llm.train.policy_steps=20 llm.train.eval_every=0 trainer.enable_progress_bar=false"
$RUN trainer=$TRAINER $([ "$DEVICE" = cpu ] || echo trainer.precision=bf16-mixed) hydra.run.dir="$RUNS/gpu" 2>&1 \
  | tail -1 | tee "$OUT/run_gpu.txt"
if [ "$DEVICE" != cpu ]; then
  $RUN trainer=fsdp hydra.run.dir="$RUNS/fsdp" 2>&1 | tail -3 | tee "$OUT/run_fsdp.txt"
fi
for d in "$RUNS"/*/; do cp "$d/metrics.json" "$OUT/$(basename "$d")_metrics.json" 2>/dev/null; done
