#!/usr/bin/env bash
# Every GPU check of the MuJoCo engine, in one script for a lent GPU machine (docs/engine.md, "Devices"):
#   1. SAC env steps/s on HalfCheetah-v5, aihf beside stable-baselines3 on the same GPU (256x256, batch 256,
#      one update per env step), then aihf with torch.compile + CUDA graphs;
#   2. every MuJoCo preset with trainer=gpu and 4 vector envs (debug=fast);
#   3. the main job on the GPU: python run.py algo=aihf trainer=gpu.
# Results go to $OUT (or ./gpu_checks). Needs hydra-core, omegaconf, antlr4, gymnasium, mujoco, stable-baselines3
# (wheels for Python 3.12 carried in .whl; see the device tool's README). MUJOCO_GL must stay unset there.
# Test it on a CPU with: DEVICE=cpu STEPS=1200 STARTS=400 MAIN_STEPS=2000 bash bench/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
unset MUJOCO_GL
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
DEVICE=${DEVICE:-cuda}; TRAINER=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu)
STEPS=${STEPS:-6000}; STARTS=${STARTS:-1000}; MAIN_STEPS=${MAIN_STEPS:-60000}
OUT=${OUT:-gpu_checks}; mkdir -p "$OUT"; RUNS=$(mktemp -d)
(nvidia-smi -L || lscpu | grep "Model name") 2>&1 | tee "$OUT/device.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/device.txt"

python bench/sac_throughput.py --device "$DEVICE" --steps "$STEPS" --learning-starts "$STARTS" 2>&1 \
  | grep -v -i warn | tail -8 | tee "$OUT/bench.txt"
python bench/sac_throughput.py --device "$DEVICE" --steps "$STEPS" --learning-starts "$STARTS" --skip-sb3 \
  --aihf policy.compile=true policy.compile_mode=$([ "$DEVICE" = cpu ] && echo default || echo reduce-overhead) 2>&1 \
  | grep -v -i warn | tail -5 | tee "$OUT/bench_compiled.txt"

for algo in aihf irl rlhf bc sac constant sac_recipe; do
  python run.py algo=$algo debug=fast trainer=$TRAINER env.num_envs=4 hydra.run.dir="$RUNS/$algo" 2>&1 | tail -1 \
    | sed "s/^/$algo: /" | tee -a "$OUT/presets.txt"
done

/usr/bin/time -f "wall %e s" python run.py algo=aihf domain=mujoco trainer=$TRAINER loop.total_env_steps=$MAIN_STEPS \
  trainer.enable_progress_bar=false hydra.run.dir="$RUNS/main" 2>&1 | tail -2 | tee "$OUT/main_job.txt"
cp "$RUNS/main/metrics.json" "$OUT/main_metrics.json" 2>/dev/null
