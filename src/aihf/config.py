"""Structured configs: every key of `conf/` has a type and a meaning here.

The dataclasses are registered in Hydra's ConfigStore as the schema of the root config, so a misspelt key
(`algo.demo_wieght=1`) or a wrong type (`algo.demo_weight=abc`) stops the run at start-up with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DomainConfig:
    """Which LightningModule runs the job."""
    name: str = "mujoco"
    module: str = "aihf.mujoco.module.MuJoCoAIHF"
    tag: str = "Hopper-v5"            # names run directories: the env id (MuJoCo) or the task (LLM)


@dataclass
class EnvConfig:
    """A gymnasium environment. Results name the version: only -v5 ids are shipped with data."""
    id: str = "Hopper-v5"
    max_episode_steps: int = 1000
    # Training envs stepped as one batch (gymnasium vector API, same-step autoreset); the update-to-data ratio
    # policy.updates_per_step stays per env step, so runs at different num_envs take the same number of updates.
    num_envs: int = 1
    vectorization_mode: str = "sync"  # sync (one process; faster on few cores) | async (one subprocess per env)
    # Extra gymnasium.make kwargs for the *training* env only (e.g. {terminate_when_unhealthy: false});
    # evaluation always uses the standard env, so reported returns stay comparable.
    train_kwargs: Dict[str, Any] = field(default_factory=dict)
    # Normalisation anchors for the expert-normalised score; null = read from the dataset's metadata.
    expert_return: Optional[float] = None
    random_return: Optional[float] = None


@dataclass
class AlgoConfig:
    """A preset: which terms of the objective are on, and how policy and reward steps interleave."""
    name: str = "aihf"
    demo_weight: float = 1.0          # λ_D
    pref_weight: float = 1.0          # λ_P
    weighting: str = "mean"           # mean | sum (see objectives.weighted_objective)
    beta: Optional[float] = None      # temperature of the lower level; null = the policy's entropy coefficient
    reward_source: str = "learned"    # learned: explicit r_θ | env: true reward (MuJoCo oracle) | implicit: β·log π/π_ref (LLM)
    policy_update: str = "sac"        # MuJoCo: sac | bc.  LLM: rloo (RL on r_θ) | bc (SFT) | direct (implicit-reward loss) | none
    schedule: str = "alternating"     # alternating (AIHF loop) | sequential (fit reward, freeze, then RL)
    reward_pretrain_steps: int = 0    # reward steps before any policy step (sequential: the whole fit)
    reward_every: int = 1000          # env steps between reward phases (alternating)
    reward_steps: int = 1             # reward gradient steps per phase
    bc_warmstart_steps: int = 0       # behaviour-cloning steps on demonstrations before RL (0 = off; the SFT of RLHF)
    demo_replay_fraction: float = 0.0  # share of each SAC batch drawn from the demonstrations, scored by r_θ
    needs_demos: bool = True
    needs_prefs: bool = True
    # Language-model presets (ignored by MuJoCo):
    dpo_loss_type: str = "sigmoid"    # the preference term on the implicit reward: sigmoid (DPO) | ipo
    label_smoothing: float = 0.0      # conservative DPO
    demo_term: str = "nll"            # implicit reward's demonstration term: nll (−log π(y^E|x)) | selfplay (SPIN: y^E ≻ own sample)
    chosen_nll_weight: float = 0.0    # RPO: α · NLL of the chosen responses added to the DPO loss
    reference_refresh_every: int = 0  # self-play: copy π into π_ref (and so the opponent) every N policy steps; 0 = never


@dataclass
class PolicyConfig:
    """Soft actor-critic: twin Q networks with target networks and a tanh-Gaussian actor."""
    _target_: str = "aihf.mujoco.sac.SACPolicy"
    hidden: List[int] = field(default_factory=lambda: [256, 256])
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 0.2                # initial (or fixed) entropy coefficient
    learn_alpha: bool = True
    target_entropy: Optional[float] = None  # null = −action_dim
    batch_size: int = 256
    updates_per_step: float = 1.0     # gradient updates per env step (fractions allowed, e.g. 0.5)
    learning_starts: int = 5000       # uniformly random actions before the first update
    buffer_size: int = 1_000_000
    matmul: str = "auto"              # CPU kernel of the linear layers: auto | onednn | aten (aihf.mujoco.layers)
    compile: bool = False             # torch.compile the critic and actor losses (forward and backward)
    compile_mode: Optional[str] = None  # torch.compile mode: null (default) | reduce-overhead (CUDA graphs) | max-autotune


@dataclass
class RewardConfig:
    """An MLP reward r_θ(s, a) or r_θ(s)."""
    _target_: str = "aihf.mujoco.reward.RewardNet"
    input: str = "sa"                 # sa | s
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    clamp: float = 10.0               # output clipped to ±clamp (0 = no clamp)
    lr: float = 1e-4
    weight_decay: float = 1e-3
    batch_size: int = 1000            # demo and policy transitions per reward step
    pref_batch_size: int = 32
    discount: float = 1.0             # γ inside R_θ(τ) = Σ γ^t r_θ(s_t, a_t) for preference returns


@dataclass
class DataConfig:
    """The data mix: which shipped or collected dataset, and how much of each kind is used."""
    path: Optional[str] = None        # .npz dataset; null = data/mujoco/<env id>.npz shipped with aihf
    num_demos: int = 1                # expert trajectories used as demonstrations
    num_prefs: int = 200              # preference pairs used for training (0 = none)
    policy_window: int = 5000         # most recent env steps used as samples of the current policy


@dataclass
class TeacherConfig:
    """Simulated preference teacher on the true return (DESIGN.md §4)."""
    beta: float = 1.0                 # rationality β_T; inf = always picks the higher return
    mistake_prob: float = 0.0         # probability the label is flipped after the BT draw
    equal_threshold: float = 0.0      # |ΔG| below this gives the label 0.5 ("equal")
    discount: float = 1.0             # myopic discount inside the teacher's return
    return_scale: float = 0.1         # G is multiplied by this before the BT draw (50-step segment returns are in the 10s-100s)


@dataclass
class CollectConfig:
    """task=collect: demonstrations and preference pairs from a quality ladder of checkpoints."""
    ladder_dir: Optional[str] = None  # folder of ladder/*.pt written by an algo=sac run
    output: Optional[str] = None      # .npz to write; must not exist
    num_demos: int = 5
    rollouts_per_rung: int = 2
    max_rungs: int = 10               # use at most this many rungs, evenly spaced over the ladder (keeps files small)
    random_rollouts: int = 4
    heldout_fraction: float = 0.3
    num_pairs: int = 1000
    num_heldout_pairs: int = 300
    segment_length: int = 50          # 0 = whole trajectories; else segments (T-REX style snippets)
    demo_deterministic: bool = True


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer (accelerator, devices, precision, ...)."""
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"            # auto | ddp | fsdp | deepspeed_stage_2 ... (Lightning strategies)
    precision: Any = 32
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    log_every_n_steps: int = 1


@dataclass
class LoopConfig:
    """Loop budget and evaluation schedule (experiment/ files and debug/ modes override these)."""
    total_env_steps: int = 60_000     # the default main job: about 10 minutes on 2 CPU cores
    steps_per_iteration: int = 1000   # env steps per Lightning training_step (logging granularity)
    bc_steps: int = 20_000            # gradient steps for policy_update=bc
    eval_every: int = 10_000          # env steps (bc: gradient steps) between evaluations
    eval_episodes: int = 5
    final_eval_episodes: int = 10
    save_ladder: bool = False         # save the actor at every evaluation (an expert's quality ladder)
    # Record one deterministic episode at the final evaluation to <run_dir>/videos (and W&B / TensorBoard).
    # Needs moviepy (pip install 'aihf[video]') and an OpenGL backend (MUJOCO_GL, else glfw/egl/osmesa probed).
    video: bool = False
    torch_threads: int = 2            # use 1 per job when running two jobs side by side
    # A complete checkpoint (networks, optimisers, replay buffer, episodes in progress, generators) every this
    # many env steps (bc: gradient steps) and at the end, in <run_dir>/checkpoints; the newest keep_checkpoints kept.
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 2
    # Resume an interrupted run exactly where its last checkpoint left it, in its own run directory:
    # a run directory, a .ckpt file, or auto (this run's directory if it holds a checkpoint, else start afresh).
    resume: Optional[str] = None
    # Start a new run from an earlier run's checkpoint (a new run directory; settings may differ, e.g. a larger
    # total_env_steps, which then counts the steps already taken).
    init_from: Optional[str] = None


@dataclass
class LLMTokenizerConfig:
    """wordlevel | bytelevel_bpe: trained offline on the task's own text; pretrained: by name or path."""
    kind: str = "wordlevel"
    name_or_path: Optional[str] = None
    vocab_size: int = 8000


@dataclass
class LLMPolicyConfig:
    """The policy π (and, frozen, π_ref): an AutoModelForCausalLM by name/path, or a tiny one from a config."""
    name_or_path: Optional[str] = None  # local folder (or hub name when online); null = build from the sizes below
    gguf_file: Optional[str] = None   # a GGUF file inside name_or_path (transformers dequantises it)
    arch: str = "llama"               # llama | gpt2, for a model built from a config
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 64
    lr: float = 1e-4                  # after the SFT warm start (preference and RL steps; the sft preset's SFT too)
    warmstart_lr: Optional[float] = None  # during the SFT warm start; null = lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0


@dataclass
class LLMRewardConfig:
    """The explicit reward r_φ(x, y): a scalar head on an HF backbone (by name/path, or from the policy's config)."""
    name_or_path: Optional[str] = None  # e.g. a local all-MiniLM-L6-v2 folder; null = the policy's architecture
    init_from_policy: bool = True     # start a from-config reward from the policy's transformer after SFT
    max_length: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 32              # preference pairs (and demonstration–sample pairs) per reward step


@dataclass
class LLMDataConfig:
    """Demonstrations, preference pairs and evaluation prompts: local jsonl/json/parquet (or hub names) via `datasets`."""
    name: str = "sort"                # names run directories
    format: str = "plain"             # plain: prompt/response, prompt/chosen/rejected | hh: Anthropic HH dialogues | chat: message lists
    demos: Optional[str] = None
    prefs: Optional[str] = None
    heldout_demos: Optional[str] = None
    heldout_prefs: Optional[str] = None
    eval_prompts: Optional[str] = None
    split: str = "train"              # the split to read from each source
    heldout_fraction: float = 0.0     # carve held-out pairs/demos out of the training files when no held-out file is given
    demos_from_prefs: bool = False    # use (prompt, chosen) of the training pairs as demonstrations (HH)
    num_demos: int = 1000             # at most this many (0 = none)
    num_prefs: int = 2000
    num_heldout: int = 300            # at most this many held-out pairs / demos / eval prompts
    max_length: int = 32              # prompt + response tokens
    max_prompt_length: int = 16
    prompt_truncation: str = "error"  # error: refuse a prompt over max_prompt_length | left: keep its last tokens
    empty_responses: str = "error"    # error: refuse a row with an empty response | drop: skip it (logged with the count)
    gold: Optional[str] = "sort"      # programmatic gold reward (aihf.llm.gold) | null when the task has none


@dataclass
class LLMTrainConfig:
    """Loop budget and sampling for the language-model domain."""
    policy_steps: int = 300           # policy (or, for rm, reward) steps after the SFT warm start and reward pre-fit
    batch_size: int = 32              # demonstrations / preference pairs per policy step
    rl_prompts: int = 16              # prompts per RL step
    rl_samples: int = 4               # samples per prompt (RLOO's leave-one-out baseline needs ≥ 2)
    max_new_tokens: int = 12
    temperature: float = 1.0
    eval_every: int = 100             # steps between evaluations (0 = only at the end)
    eval_samples: int = 2             # sampled responses per evaluation prompt
    sample_table_rows: int = 8
    eval_batch_size: int = 64
    eval_prompts: int = 200           # at most this many prompts for the generation metrics (gold, KL, samples)
    eval_at_start: bool = False       # also evaluate before the first step (the untrained baseline, logged at step 0)
    torch_threads: int = 2


@dataclass
class LLMConfig:
    tokenizer: LLMTokenizerConfig = field(default_factory=LLMTokenizerConfig)
    policy: LLMPolicyConfig = field(default_factory=LLMPolicyConfig)
    reward: LLMRewardConfig = field(default_factory=LLMRewardConfig)
    data: LLMDataConfig = field(default_factory=LLMDataConfig)
    train: LLMTrainConfig = field(default_factory=LLMTrainConfig)


@dataclass
class LoggerConfig:
    csv: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "aihf"
    wandb_mode: str = "offline"       # offline needs no API key or network


@dataclass
class Config:
    task: str = "train"               # train | collect
    seed: int = 0
    run_dir: str = "."
    domain: DomainConfig = field(default_factory=DomainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="aihf_schema", node=Config)
