"""Structured configs: every key of `conf/` has a type and a meaning here.

The dataclasses are registered in Hydra's ConfigStore as the schema of the root config, so a misspelt key
(`algo.demo_wieght=1`) or a wrong type (`algo.demo_weight=abc`) stops the run at start-up with the key's name.
Each key's allowed values are declared beside it (`key(default, check)`), and each group says which domain reads it
(`SCOPE`; a key's own `scope=` where it differs): `aihf.checks` refuses a value out of range, or a key the chosen
domain would ignore, in one line before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from aihf.checks import above, at_least, each, either, finite, key, one_of, within


@dataclass
class DomainConfig:
    """Which LightningModule runs the job."""
    name: str = "mujoco"
    module: str = "aihf.mujoco.module.MuJoCoAIHF"
    tag: str = "Hopper-v5"            # names run directories: the env id (MuJoCo) or the task (LLM)


@dataclass
class EnvConfig:
    """A gymnasium environment. Results name the version: only -v5 ids are shipped with data."""
    SCOPE: ClassVar[str] = "mujoco"
    id: str = "Hopper-v5"
    max_episode_steps: int = key(1000, at_least(1))
    # Training envs stepped as one batch (gymnasium vector API, same-step autoreset); the update-to-data ratio
    # policy.updates_per_step stays per env step, so runs at different num_envs take the same number of updates.
    num_envs: int = key(1, at_least(1))
    # sync (one process; faster on few cores) | async (one subprocess per env)
    vectorization_mode: str = key("sync", one_of("sync", "async"))
    # Extra gymnasium.make kwargs for the *training* env only (e.g. {terminate_when_unhealthy: false});
    # evaluation always uses the standard env, so reported returns stay comparable.
    train_kwargs: Dict[str, Any] = field(default_factory=dict)
    # Normalisation anchors for the expert-normalised score; null = read from the dataset's metadata.
    expert_return: Optional[float] = key(None, finite())
    random_return: Optional[float] = key(None, finite())


@dataclass
class AlgoConfig:
    """A preset: which terms of the objective are on, and how policy and reward steps interleave."""
    name: str = "aihf"
    demo_weight: float = key(1.0, at_least(0))  # λ_D
    pref_weight: float = key(1.0, at_least(0))  # λ_P
    weighting: str = key("mean", one_of("mean", "sum"))  # mean | sum (see objectives.weighted_objective)
    # temperature β of the lower level (and the KL coefficient of the LLM presets): a number, or alpha (MuJoCo:
    # SAC's current entropy coefficient α, so λ_D/β follows the policy's temperature); null = alpha
    beta: Any = key(None, either(above(0), one_of("alpha")))
    # learned: explicit r_θ | env: true reward (MuJoCo oracle) | implicit: β·log π/π_ref (LLM) | constant:
    # r ≡ algo.constant_reward (MuJoCo control: what the recipe and the env's termination give without a reward)
    reward_source: str = key("learned", one_of("learned", "env", "implicit", "constant"))
    constant_reward: float = key(1.0, finite(), scope="mujoco")
    # MuJoCo: the recipe's tricks for a preset on the env's reward too (sac_recipe: the oracle under the recipe,
    # replaying the demonstrations with their recorded true rewards); presets that do not use the env's reward get
    # them regardless
    with_recipe: bool = key(False, scope="mujoco")
    # MuJoCo: sac | bc.  LLM: rloo (RL on r_θ) | bc (SFT) | direct (implicit-reward loss) | none
    policy_update: str = key("sac", one_of("sac", "bc", "rloo", "direct", "none"))
    # alternating (AIHF loop) | sequential (fit reward, freeze, then RL)
    schedule: str = key("alternating", one_of("alternating", "sequential"))
    reward_pretrain_steps: int = key(0, at_least(0))  # reward steps before any policy step (sequential: the whole fit)
    reward_every: int = key(1000, at_least(0))  # env steps between reward phases (alternating)
    reward_steps: int = key(1, at_least(1))  # reward gradient steps per phase
    # LLM: SFT steps on the demonstrations before π_ref is fixed (MuJoCo: recipe.bc_warmstart_steps)
    bc_warmstart_steps: int = key(0, at_least(0), scope="llm")
    needs_demos: bool = key(True, scope="mujoco")
    needs_prefs: bool = key(True, scope="mujoco")
    # Language-model presets (refused with domain=mujoco):
    # the preference term on the implicit reward: sigmoid (DPO) | ipo (on per-token mean log-ratios, as TRL and the
    # IPO paper's experiments) | ipo_sum (on summed log-ratios, so β's scale depends on response length)
    dpo_loss_type: str = key("sigmoid", one_of("sigmoid", "ipo", "ipo_sum"), scope="llm")
    label_smoothing: float = key(0.0, within(0, 0.5, high_open=True), scope="llm")  # conservative DPO
    # implicit reward's demonstration term: nll (−log π(y^E|x)) | selfplay (SPIN: y^E ≻ own sample)
    demo_term: str = key("nll", one_of("nll", "selfplay"), scope="llm")
    # RPO: α · NLL of the chosen responses added to the DPO loss
    chosen_nll_weight: float = key(0.0, at_least(0), scope="llm")
    # self-play: copy π into π_ref (and so the opponent) every N policy steps; 0 = never
    reference_refresh_every: int = key(0, at_least(0), scope="llm")


@dataclass
class PolicyConfig:
    """Soft actor-critic: twin Q networks with target networks and a tanh-Gaussian actor."""
    SCOPE: ClassVar[str] = "mujoco"
    _target_: str = "aihf.mujoco.sac.SACPolicy"
    hidden: List[int] = key(factory=lambda: [256, 256], check=each(at_least(1)))
    actor_lr: float = key(3e-4, above(0))
    critic_lr: float = key(3e-4, above(0))
    alpha_lr: float = key(3e-4, above(0))
    gamma: float = key(0.99, within(0, 1))
    tau: float = key(0.005, within(0, 1, low_open=True))
    alpha: float = key(0.2, above(0))  # initial (or fixed) entropy coefficient
    learn_alpha: bool = True
    target_entropy: Optional[float] = key(None, finite())  # null = −action_dim
    batch_size: int = key(256, at_least(1))
    updates_per_step: float = key(1.0, above(0))  # gradient updates per env step (fractions allowed, e.g. 0.5)
    learning_starts: int = key(5000, at_least(0))  # uniformly random actions before the first update
    buffer_size: int = key(1_000_000, at_least(1))
    # CPU kernel of the linear layers: auto | onednn | aten (aihf.mujoco.layers)
    matmul: str = key("auto", one_of("auto", "onednn", "aten"))
    compile: bool = False             # torch.compile the critic and actor losses (forward and backward)
    # torch.compile mode: null (default) | reduce-overhead (CUDA graphs) | max-autotune
    compile_mode: Optional[str] = key(None, one_of(None, "default", "reduce-overhead", "max-autotune",
                                                    "max-autotune-no-cudagraphs"))


@dataclass
class RewardConfig:
    """An MLP reward r_θ(s, a) or r_θ(s)."""
    SCOPE: ClassVar[str] = "mujoco"
    _target_: str = "aihf.mujoco.reward.RewardNet"
    input: str = key("sa", one_of("sa", "s"))
    hidden: List[int] = key(factory=lambda: [64, 64], check=each(at_least(1)))
    activation: str = key("relu", one_of("relu", "tanh", "elu", "silu"))
    clamp: float = key(10.0, at_least(0))  # output clipped to ±clamp (0 = no clamp)
    lr: float = key(1e-4, above(0))
    weight_decay: float = key(1e-3, at_least(0))
    batch_size: int = key(1000, at_least(1))  # demo and policy transitions per reward step
    pref_batch_size: int = key(32, at_least(1))
    # γ inside R_θ(τ) = Σ γ^t r_θ(s_t, a_t) for preference returns
    discount: float = key(1.0, within(0, 1, low_open=True))


@dataclass
class RecipeConfig:
    """MuJoCo training tricks beyond the objective, applied identically to every preset that learns a reward
    (irl, rlhf, aihf; also the constant control and sac_recipe; not to the sac oracle or bc), so that presets
    compared under one recipe differ only in their objective. conf/recipe/: paper (the authors' ML-IRL recipe,
    docs/design.md §6), cpu_budget (the default)."""
    SCOPE: ClassVar[str] = "mujoco"
    name: str = "cpu_budget"
    bc_warmstart_steps: int = key(2000, at_least(0))  # behaviour-cloning steps on D before RL (RLHF's SFT)
    # share of each SAC batch drawn from the demonstrations, scored by the current r_θ like the agent's own steps
    demo_replay_fraction: float = key(0.25, within(0, 1, high_open=True))
    # whether the actor and the temperature also learn on the replayed demonstration's states (true: the critic's
    # batch, as the comparisons ran) or only the critic does (false: the actor and α on the agent's own steps, so the
    # actor is never improved against the critic at states it does not reach: docs/results.md, HalfCheetah)
    demo_replay_actor: bool = True
    # the reward's schedule; null = the preset's algo.reward_every / algo.reward_steps
    reward_every: Optional[int] = key(None, at_least(1))
    reward_steps: Optional[int] = key(None, at_least(1))
    # β of the demonstration term; null = the preset's algo.beta (a number, or alpha: SAC's current α)
    beta: Any = key(None, either(above(0), one_of("alpha")))


@dataclass
class DataConfig:
    """The data mix: which shipped or collected dataset, and how much of each kind is used."""
    SCOPE: ClassVar[str] = "mujoco"
    path: Optional[str] = None        # .npz dataset; null = data/mujoco/<env id>.npz shipped with aihf
    num_demos: int = key(1, at_least(0))  # expert trajectories used as demonstrations
    num_prefs: int = key(200, at_least(0))  # preference pairs used for training (0 = none)
    policy_window: int = key(5000, at_least(1))  # most recent env steps used as samples of the current policy
    # which demonstrations and pairs are drawn (at random, without replacement); null = the run's seed, so each seed
    # also draws its own data; fix it to hold the data still across seeds
    subset_seed: Optional[int] = key(None, at_least(0))
    # demonstrations from another policy of the dataset's ladder: a policy name in its metadata, or middle (the
    # ladder's median-return rung); null = the dataset's expert demonstrations (demonstration quality studies)
    demo_policy: Optional[str] = None
    # relabel the training pairs at load with the teacher.* settings, on their true segment returns (teacher noise
    # studies without collecting new data); false = the labels stored in the dataset
    relabel: bool = False


@dataclass
class TeacherConfig:
    """Simulated preference teacher on the true return (docs/design.md §4): labels a dataset's pairs when it is built,
    or relabels the training pairs at load with data.relabel=true (so teacher noise is sweepable in training)."""
    SCOPE: ClassVar[str] = "teacher"
    beta: float = key(1.0, above(0, allow_inf=True))  # rationality β_T; inf = always picks the higher return
    mistake_prob: float = key(0.0, within(0, 1))  # probability the label is flipped after the BT draw
    equal_threshold: float = key(0.0, at_least(0))  # |ΔG| below this gives the label 0.5 ("equal")
    discount: float = key(1.0, within(0, 1, low_open=True))  # myopic discount inside the teacher's return
    # G is multiplied by this before the BT draw (50-step segment returns are in the 10s-100s)
    return_scale: float = key(0.1, above(0))


@dataclass
class CollectConfig:
    """task=collect: demonstrations and preference pairs from a quality ladder of checkpoints."""
    SCOPE: ClassVar[str] = "collect"
    # folder of ladder/*.pt written by an algo=sac run; several joined by os.pathsep (":") for an expert trained in
    # parts (each continued from the last with loop.init_from)
    ladder_dir: Optional[str] = None
    output: Optional[str] = None      # .npz to write; must not exist
    num_demos: int = key(5, at_least(1))
    rollouts_per_rung: int = key(2, at_least(1))
    # use at most this many rungs, evenly spaced over the ladder (keeps files small)
    max_rungs: int = key(10, at_least(1))
    random_rollouts: int = key(4, at_least(0))
    heldout_fraction: float = key(0.3, within(0, 1, low_open=True, high_open=True))
    num_pairs: int = key(1000, at_least(1))
    num_heldout_pairs: int = key(300, at_least(0))
    segment_length: int = key(50, at_least(0))  # 0 = whole trajectories; else segments (T-REX style snippets)
    demo_deterministic: bool = True
    # The expert rung: the `expert_candidates` rungs of best training-time evaluation (5 episodes each, so a lucky
    # one can top it) are evaluated again over `expert_eval_episodes` fresh deterministic episodes, the same start
    # states for each; the best of those is the expert (1 = the training-time best, without re-evaluation).
    expert_candidates: int = key(5, at_least(1))
    expert_eval_episodes: int = key(10, at_least(1))


@dataclass
class SourceConfig:
    """task=import: external episodes to turn into an aihf dataset (docs/data.md). Set exactly one source; each
    Minari dataset, each model file and each label of the episode file is one policy of the quality ladder."""
    SCOPE: ClassVar[str] = "import"
    # Minari dataset ids in the local Minari root (MINARI_DATASETS_PATH, else ~/.minari/datasets), or paths to a
    # dataset's folder; needs `pip install 'aihf[minari]'`
    minari: List[str] = field(default_factory=list)
    episodes: Optional[str] = None    # a plain .npz file of episodes (docs/data.md)
    sb3: List[str] = field(default_factory=list)  # stable-baselines3 model .zip files, rolled out in env.id
    sb3_algo: str = key("sac", one_of("sac", "td3", "ddpg", "ppo", "a2c"))  # the class the model files were saved by
    # the policy whose episodes become the demonstrations (a Minari id, a model file, an episode label);
    # null = the one with the highest mean return
    expert: Optional[str] = None


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer (accelerator, devices, precision, ...)."""
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"            # auto | ddp | fsdp | deepspeed_stage_2 ... (Lightning strategies)
    precision: Any = 32
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    log_every_n_steps: int = key(1, at_least(1))


@dataclass
class LoopConfig:
    """Loop budget and evaluation schedule (experiment/ files and debug/ modes override these)."""
    SCOPE: ClassVar[str] = "mujoco"
    total_env_steps: int = key(60_000, at_least(1))  # the default main job: about 5 minutes on 2 CPU cores (README)
    steps_per_iteration: int = key(1000, at_least(1))  # env steps per Lightning training_step (logging granularity)
    bc_steps: int = key(20_000, at_least(1))  # gradient steps for policy_update=bc
    eval_every: int = key(10_000, at_least(1))  # env steps (bc: gradient steps) between evaluations
    eval_episodes: int = key(5, at_least(1))
    final_eval_episodes: int = key(10, at_least(1))
    save_ladder: bool = False         # save the actor at every evaluation (an expert's quality ladder)
    # EPIC distance (eval/epic) on this many held-out transitions, with this many coverage states and uniform
    # actions; the true reward of unvisited (s, a) comes from the simulator (aihf.mujoco.reward_metrics); 0 = off
    epic_transitions: int = key(500, at_least(0))
    epic_coverage: int = key(8, at_least(1))
    # beside the linear demonstration classifier, the MLP one (about 5 s at the end of a run; off under debug=fast)
    demo_mlp_classifier: bool = True
    # Record one deterministic episode at the final evaluation to <run_dir>/videos (and W&B / TensorBoard).
    # Needs moviepy (pip install 'aihf[video]') and an OpenGL backend (MUJOCO_GL, else glfw/egl/osmesa probed).
    video: bool = False
    torch_threads: int = key(2, at_least(1))  # use 1 per job when running two jobs side by side
    # A NaN or inf loss, gradient, parameter or evaluation: stop the run (exit code 3, the last checkpoint kept), or
    # skip: drop each update whose loss or gradients are not finite and count it (charts/skipped_updates); a
    # non-finite parameter or evaluation still stops. skip costs one device sync per update.
    nonfinite: str = key("stop", one_of("stop", "skip"))
    # A complete checkpoint (networks, optimisers, replay buffer, episodes in progress, generators) every this
    # many env steps (bc: gradient steps) and at the end, in <run_dir>/checkpoints; the newest keep_checkpoints kept.
    checkpoint_every: int = key(10_000, at_least(1))
    keep_checkpoints: int = key(2, at_least(1))
    # Resume an interrupted run exactly where its last checkpoint left it, in its own run directory:
    # a run directory, a .ckpt file, or auto (this run's directory if it holds a checkpoint, else start afresh).
    resume: Optional[str] = key(None, scope="any")
    # Start a new run from an earlier run's checkpoint (a new run directory; settings may differ, e.g. a larger
    # total_env_steps, which then counts the steps already taken).
    init_from: Optional[str] = key(None, scope="any")


@dataclass
class LLMTokenizerConfig:
    """wordlevel | bytelevel_bpe: trained offline on the task's own text; pretrained: by name or path."""
    kind: str = key("wordlevel", one_of("wordlevel", "bytelevel_bpe", "pretrained"))
    name_or_path: Optional[str] = None
    vocab_size: int = key(8000, at_least(16))


@dataclass
class LLMPolicyConfig:
    """The policy π (and, frozen, π_ref): an AutoModelForCausalLM by name/path, or a tiny one from a config.
    Built by `hydra.utils.instantiate` with the tokenizer: `_target_` may name any callable that takes these keys
    (and `tokenizer`) and returns a transformers-style causal LM (docs/llm.md, "Components")."""
    _target_: str = "aihf.llm.models.causal_lm"
    name_or_path: Optional[str] = None  # local folder (or hub name when online); null = build from the sizes below
    gguf_file: Optional[str] = None   # a GGUF file inside name_or_path (transformers dequantises it)
    arch: str = key("llama", one_of("llama", "gpt2"))  # llama | gpt2, for a model built from a config
    hidden_size: int = key(64, at_least(1))
    num_layers: int = key(2, at_least(1))
    num_heads: int = key(4, at_least(1))
    max_positions: int = key(64, at_least(2))
    lr: float = key(1e-4, above(0))  # after the SFT warm start (preference and RL steps; the sft preset's SFT too)
    warmstart_lr: Optional[float] = key(None, above(0))  # during the SFT warm start; null = lr
    weight_decay: float = key(0.0, at_least(0))
    grad_clip: float = key(1.0, at_least(0))  # 0 = no clipping
    # recompute activations in the backward pass (less memory, about a third more compute); TRL's default is on
    gradient_checkpointing: bool = False
    # LoRA through peft: rank (0 = full fine-tuning). π_ref is then the base model with the adapter switched off,
    # not a second copy of the weights; the SFT warm start's adapter is merged into the base when π_ref is fixed.
    lora_r: int = key(0, at_least(0))
    lora_alpha: float = key(16.0, above(0))
    lora_dropout: float = key(0.0, within(0, 1, high_open=True))
    lora_target_modules: Any = "all-linear"  # peft's target_modules: "all-linear" or a list of module names


@dataclass
class LLMReferenceConfig:
    """π_ref, built from the policy by `_target_` (called with `policy`): a frozen copy, or for a LoRA policy its
    base with the adapter switched off (aihf.llm.models.frozen_copy does both)."""
    _target_: str = "aihf.llm.models.frozen_copy"


@dataclass
class LLMRewardConfig:
    """The explicit reward r_φ(x, y): a scalar head on an HF backbone (by name/path, or from the policy's config).
    Built by `hydra.utils.instantiate` with `policy` and `policy_tokenizer` (docs/llm.md, "Components")."""
    _target_: str = "aihf.llm.models.ScalarReward"
    name_or_path: Optional[str] = None  # e.g. a local all-MiniLM-L6-v2 folder; null = the policy's architecture
    init_from_policy: bool = True     # start a from-config reward from the policy's transformer after SFT
    max_length: int = key(512, at_least(2))
    lr: float = key(1e-4, above(0))
    weight_decay: float = key(0.0, at_least(0))
    grad_clip: float = key(0.0, at_least(0))  # the reward step's gradient-norm clip; 0 = no clipping
    batch_size: int = key(32, at_least(1))  # preference pairs (and demonstration–sample pairs) per reward step


@dataclass
class LLMDataConfig:
    """Demonstrations, preference pairs and evaluation prompts: local jsonl/json/parquet (or hub names), `datasets`."""
    name: str = "sort"                # names run directories
    # plain: prompt/response, prompt/chosen/rejected | hh: Anthropic HH dialogues | chat: message lists
    format: str = key("plain", one_of("plain", "hh", "chat"))
    demos: Optional[str] = None
    prefs: Optional[str] = None
    heldout_demos: Optional[str] = None
    heldout_prefs: Optional[str] = None
    eval_prompts: Optional[str] = None
    split: str = "train"              # the split to read from each source
    # carve held-out pairs/demos out of the training files when no held-out file is given
    heldout_fraction: float = key(0.0, within(0, 1, high_open=True))
    # the permutation of prompts that heldout_fraction cuts: fixed across runs by default; ${seed} gives each seed
    # its own held-out split (a study over splits)
    split_seed: int = key(0, at_least(0))
    # k-fold held-out splits instead of heldout_fraction: the prompts (permuted by split_seed) fall into split_folds
    # disjoint folds of about equal pair counts, and fold split_fold is held out, whole (num_heldout does not cut
    # it); a study over split_fold=0..k-1 holds every pair out exactly once, so its splits do not overlap
    split_folds: int = key(0, at_least(0))
    split_fold: int = key(0, at_least(0))
    demos_from_prefs: bool = False    # use (prompt, chosen) of the training pairs as demonstrations (HH)
    num_demos: int = key(1000, at_least(0))  # at most this many (0 = none)
    num_prefs: int = key(2000, at_least(0))
    # which num_demos demonstrations and num_prefs training pairs a run uses: random (drawn without replacement with
    # subset_seed, null = the run's seed, so seeds vary the data as well as the learner; kept in file order, so the
    # draw of every row is every row) or first (the first rows: the only rule before this key existed)
    subset: str = key("random", one_of("random", "first"))
    subset_seed: Optional[int] = key(None, at_least(0))
    num_heldout: int = key(300, at_least(0))  # at most this many held-out pairs / demos / eval prompts
    max_length: int = key(32, at_least(2))  # prompt + response tokens
    max_prompt_length: int = key(16, at_least(1))
    # error: refuse a prompt over max_prompt_length | left: keep its last tokens
    prompt_truncation: str = key("error", one_of("error", "left"))
    # error: refuse a row with an empty response | drop: skip it (logged with the count)
    empty_responses: str = key("error", one_of("error", "drop"))
    gold: Optional[str] = "sort"      # programmatic gold reward (aihf.llm.gold) | null when the task has none


@dataclass
class LLMTrainConfig:
    """Loop budget and sampling for the language-model domain."""
    # policy (or, for rm, reward) steps after the SFT warm start and reward pre-fit; 0 = stop after the warm start
    # (algo=sft llm.train.policy_steps=0 is π_ref itself, the reference row of docs/llm.md)
    policy_steps: int = key(300, at_least(0))
    # instead of policy_steps: this many passes over the main stage's data (the pairs for DPO-like presets and rm,
    # the demonstrations for sft, the prompts of D and P for RLOO), rounded up to whole steps
    epochs: Optional[float] = key(None, above(0))
    batch_size: int = key(32, at_least(1))  # demonstrations / preference pairs per policy step
    rl_prompts: int = key(16, at_least(1))  # prompts per RL step
    rl_samples: int = key(4, at_least(1))  # samples per prompt (RLOO's leave-one-out baseline needs ≥ 2)
    max_new_tokens: int = key(12, at_least(1))
    temperature: float = key(1.0, above(0))
    eval_every: int = key(100, at_least(0))  # steps between evaluations (0 = only at the end)
    eval_samples: int = key(2, at_least(1))  # sampled responses per evaluation prompt
    sample_table_rows: int = key(8, at_least(0))
    eval_batch_size: int = key(64, at_least(1))
    # at most this many prompts for the generation metrics (gold, KL, samples); 0: none (the pairs' metrics only,
    # and with precomputed reference log-probs π_ref's copy can then be released)
    eval_prompts: int = key(200, at_least(0))
    eval_at_start: bool = False  # also evaluate before the first step (the untrained baseline, logged at step 0)
    torch_threads: int = key(2, at_least(1))
    # response log-probs are computed this many token positions at a time (the memory of one chunk's fp32
    # softmax, chunk × vocabulary × 4 bytes, instead of every position's)
    logp_chunk: int = key(512, at_least(1))
    # The LM head fused into the log-probs: only response positions reach it, a chunk at a time, recomputed in the
    # backward, so no (positions × vocabulary) logits or gradient exist (TRL's fused head, without its prompt and
    # padding positions). Used for a model whose logits are its head on the last hidden state (checked once);
    # otherwise, under trainer=fsdp (its head is sharded) or when false, from the model's logits
    fused_head: bool = True
    # Several responses to one prompt (chosen and rejected, RLOO's samples) in one row, [prompt | response 1 | …],
    # under an attention mask that lets each response see the prompt and itself only: the prompt is computed once
    # (equal log-probs and gradients; sdpa or eager attention, else one row per response). Measured 1.2–1.3× the
    # pairs/s of one row per response on the sort task (docs/llm.md, "Speed against TRL")
    share_prompt: bool = True
    # π_ref's log-probs of the pairs: live (a reference forward at every step) or precomputed once when π_ref is
    # frozen (then every step runs the policy only), kept in the checkpoint and, with reference_cache_dir, on disk
    # under a fingerprint of the reference's weights and the pairs' tokens for later runs (e.g. a sweep over seeds)
    reference_logps: str = key("live", one_of("live", "precomputed"))
    reference_cache_dir: Optional[str] = None
    # A complete checkpoint (models, optimisers, data order, RNG) every this many steps and at the end, in
    # <run_dir>/checkpoints (last.ckpt the newest); the newest keep_checkpoints periodic ones kept. A run that
    # diverges or is killed keeps the checkpoint before it.
    checkpoint_every: int = key(100, at_least(1))
    keep_checkpoints: int = key(2, at_least(1))
    # A NaN or inf loss or training metric: stop the run (exit code 3), or skip: drop each update whose loss or
    # gradients are not finite and count it (train/skipped_updates); a non-finite evaluation still stops.
    nonfinite: str = key("stop", one_of("stop", "skip"))


@dataclass
class LLMConfig:
    SCOPE: ClassVar[str] = "llm"
    tokenizer: LLMTokenizerConfig = field(default_factory=LLMTokenizerConfig)
    policy: LLMPolicyConfig = field(default_factory=LLMPolicyConfig)
    reference: LLMReferenceConfig = field(default_factory=LLMReferenceConfig)
    reward: LLMRewardConfig = field(default_factory=LLMRewardConfig)
    data: LLMDataConfig = field(default_factory=LLMDataConfig)
    train: LLMTrainConfig = field(default_factory=LLMTrainConfig)


@dataclass
class LoggerConfig:
    csv: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "aihf"
    wandb_mode: str = key("offline", one_of("offline", "online", "disabled"))  # offline needs no API key or network


@dataclass
class Config:
    task: str = key("train", one_of("train", "collect", "import"))
    # the result a --multirun sweeper optimises (Optuna: hparams_search/): a numeric key of metrics.json, or
    # `headline` (the mean score of the evaluations in the last 20 % of training); null = the job returns all its metrics
    optimized_metric: Optional[str] = None
    seed: int = key(0, within(0, 2**32 - 1))
    run_dir: str = "."
    domain: DomainConfig = field(default_factory=DomainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


# Keys added with a default that differs from what runs did before they existed: a run recorded without such a key
# ran with the value here, and is resumed or evaluated again with it (aihf.resume, aihf.recompose).
BEFORE_KEY_EXISTED = {"llm.data.subset": "first"}


def register_configs() -> None:
    ConfigStore.instance().store(name="aihf_schema", node=Config)
