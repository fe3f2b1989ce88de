"""Typed configuration schemas for scaling-cli.

Every Hydra config group has a dataclass here, registered in Hydra's ConfigStore
by `register_configs()`. YAML files in `conf/` only select and override these
schemas, so a typo or a wrong type in an override fails during composition,
before any training starts. Semantic checks that types cannot express
(positive learning rate, d_model divisible by n_head...) live in `validate()`,
which raises one `ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from scaling_cli.errors import UserError
from scaling_cli.evals.config import EvalConfig, validate_eval


# A run's length is set by one of these; a sweep.validate entry that sets one clears the other two.
LENGTH_KEYS = ("train.tokens", "train.steps", "train.tokens_per_param")


class ConfigError(UserError):
    """A configuration value is invalid; the message names the field and the fix."""


@dataclass
class ModelConfig:
    """GPT-style pre-norm decoder proxy."""

    d_model: int = MISSING
    """Residual stream width."""
    n_layer: int = MISSING
    """Number of transformer blocks."""
    n_head: int = MISSING
    """Attention heads; d_model must be divisible by n_head."""
    seq_len: int = 128
    """Context length in tokens (sequences are packed to exactly this length)."""
    vocab_size: int = 2048
    """Vocabulary size; the BPE tokenizer is trained to this size."""
    mlp: str = "gelu"
    """MLP type: 'gelu' (4x, two matrices) or 'swiglu' (8/3x, three matrices)."""
    mlp_ratio: float = 4.0
    """Hidden width of the MLP as a multiple of d_model ('swiglu' uses 2/3 of it)."""
    tied_embeddings: bool = True
    """Share the token embedding with the output projection."""
    qk_layernorm: bool = False
    """LayerNorm on queries and keys (Wortsman et al.: keeps attention logits bounded)."""
    z_loss: float = 0.0
    """Coefficient of the auxiliary z-loss, coef * logsumexp(logits)^2 (1e-4 in Wortsman et al.)."""
    logit_softcap: float = 0.0
    """Soft-cap on output logits, cap * tanh(logits / cap); 0 disables it."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    init_std: float = 0.02
    """Std of the normal initialisation; residual projections are scaled by 1/sqrt(2 n_layer) (GPT-2)."""
    loss_impl: str = "auto"
    """Output-layer loss: 'auto' (fused Triton kernel on CUDA, chunked PyTorch elsewhere), 'triton', 'torch'."""
    parametrization: str = "standard"
    """'standard' (GPT-2 init, one learning rate) or 'mup' (Yang et al., Tensor Programs V: init, per-layer
    Adam LR and output/attention multipliers scaled with width so the best LR transfers across d_model;
    scaling_cli/model/mup.py). 'mup' needs tied_embeddings=false and is meant for widths swept at fixed n_head."""
    mup_base_width: int = 64
    """For 'mup': the base d_model whose hyperparameters transfer; multipliers are mup_base_width / d_model."""


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token sequences."""

    source: str = MISSING
    """'embedded' (the shipped English-Spanish Bible table), a local file or folder
    (.txt, .jsonl/.json, .parquet, .csv), or a Hugging Face hub dataset name."""
    languages: List[str] = field(default_factory=lambda: ["en", "es"])
    """For the embedded corpus: which language columns to pretrain on."""
    text_column: str = "text"
    """Column holding the text, for table-like sources."""
    hub_config: Optional[str] = None
    """Dataset configuration name, for hub sources."""
    tokenizer: str = "bpe"
    """'bpe' trains a byte-level BPE of model.vocab_size on the training split (cached);
    anything else is a hub name or local path passed to transformers.AutoTokenizer."""
    val_fraction: float = 0.05
    """Share of documents held out for validation when the source has no split of its own."""
    max_documents: Optional[int] = None
    """Cap on documents read (useful for very large sources)."""
    cache_dir: Optional[str] = None
    """Where tokenizers and token arrays are cached; default $SCALING_CLI_CACHE or ~/.cache/scaling-cli."""


@dataclass
class OptimConfig:
    """AdamW."""

    lr: float = 3e-3
    """Peak learning rate."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms, biases or embeddings)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""


@dataclass
class ScheduleConfig:
    """Learning-rate schedule as a multiplier of optim.lr over training."""

    name: str = "cosine"
    """'constant', 'cosine', 'linear' or 'wsd' (warmup-stable-decay)."""
    warmup: float = 0.05
    """Warmup length: a fraction of total steps if < 1, else a step count."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine, linear, wsd)."""
    decay: float = 0.2
    """For 'wsd': length of the final decay, as a fraction of total steps if < 1, else steps."""
    decay_shape: str = "linear"
    """For 'wsd': shape of the decay, 'linear', 'cosine' or 'sqrt' (1 - sqrt, Hagele et al.)."""


@dataclass
class TrainConfig:
    """How long and how a single run trains."""

    tokens: Optional[float] = None
    """Training tokens; the step count is ceil(tokens / (batch_size * seq_len)). Set this or steps."""
    steps: Optional[int] = None
    """Optimizer steps, when tokens is not set."""
    tokens_per_param: Optional[float] = None
    """Training tokens as a multiple M of the run's total parameter count (D = M x N; 20 is Hoffmann et
    al.'s compute-optimal ratio). When set, the planner turns it into train.tokens for each model size
    and it replaces train.tokens and train.steps, so one grid axis gives every size the same D/N."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    eval_interval: int = 50
    """Validate every this many steps (and always at the end)."""
    eval_tokens: int = 65536
    """Validation tokens per evaluation (a fixed prefix of the validation split)."""
    log_interval: int = 10
    """Flush per-step metrics from the device every this many steps (every step is still logged)."""
    checkpoint_interval: int = 200
    """Save a resumable checkpoint every this many steps (and always at the end)."""
    precision: str = "auto"
    """'auto' (bf16 autocast on CUDA, fp32 on CPU), 'bf16' or 'fp32'."""
    device: str = "auto"
    """'auto', 'cpu', 'cuda' or 'cuda:N'."""
    seed: int = 0
    """Seeds initialisation and data order."""
    divergence_factor: float = 1.5
    """A run whose smoothed loss exceeds this multiple of its initial loss is stopped as diverged."""
    compile: bool = False
    """torch.compile the model (worth it on GPU for long runs)."""
    compile_mode: str = "default"
    """torch.compile mode: 'default', 'reduce-overhead' (CUDA graphs: fewer launches for tiny
    proxies), 'max-autotune' or 'max-autotune-no-cudagraphs'."""
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default."""
    kernel_tune_s: float = 5.0
    """Seconds the first pack of a shape may spend timing the fused loss's backward schemes when this
    GPU has no measured plan for it yet (kept in the plan cache for every later pack and sweep;
    `scaling-cli doctor` measures them too); 0 keeps the planner's default. Only the Triton loss on CUDA."""
    diagnostics_interval: int = 50
    """Every this many steps (from step 0), log stability diagnostics to the curve (Wortsman et al.: max
    attention logit, mean output log Z, update/weight norm ratio) at the cost of one extra forward; 0 disables."""
    loggers: List[str] = field(default_factory=list)
    """Experiment trackers that also get every curve row, eval and the config: 'tensorboard' (event files
    in the run folder) and/or 'wandb' (one offline W&B run per proxy, grouped by sweep); see
    scaling_cli/train/loggers.py. Each needs its extra: pip install 'scaling-cli[tensorboard]'."""


@dataclass
class StoreConfig:
    """Where runs are written."""

    root: str = "runs"
    """Store root: a local path or any fsspec URL (file://, s3://...)."""


@dataclass
class LauncherConfig:
    """Where and how the runs of a sweep execute. Every backend claims runs through leases in
    the store, so several launchers (or machines) can share one store safely."""

    name: str = "local"
    """'local' (this machine), 'ray' (a Ray cluster) or 'slurm' (submitit)."""
    workers: int = 0
    """local: worker processes; 0 means one per visible GPU, or 1 on a CPU-only machine."""
    pack_size: int = 0
    """Most runs trained together as one batched model (a pack: same architecture, batch size and
    data; any lr, schedule, seed, weight decay, init scale, z-loss). 0 chooses from the free memory
    of this machine's GPU (local launcher on CUDA; elsewhere no packing: set it for ray/slurm
    workers), 1 trains every run alone."""
    pack_max: int = 16
    """Upper bound on the automatic pack size."""
    pack_memory_fraction: float = 0.8
    """Share of free GPU memory the automatic pack size may plan to use."""
    lease_ttl_s: float = 120.0
    """A run's claim lapses this long after its worker's last heartbeat (a dead worker on the
    same host is noticed at once)."""
    ray_address: Optional[str] = None
    """ray: cluster address ('auto', 'ray://host:10001'); None starts a local Ray instance."""
    ray_num_gpus: float = 0.0
    """ray: GPUs requested per run (1 on a GPU cluster; fractions share a GPU)."""
    ray_num_cpus: float = 1.0
    """ray: CPUs requested per run."""
    slurm_cluster: str = "slurm"
    """slurm: submitit cluster, 'slurm' on a real cluster, 'local' or 'debug' to test without one."""
    slurm_folder: str = "submitit_logs"
    """slurm: where submitit keeps job scripts and logs."""
    slurm_partition: Optional[str] = None
    slurm_time_min: int = 60
    """slurm: time limit per job, minutes."""
    slurm_gpus_per_node: int = 0
    slurm_cpus_per_task: int = 4
    slurm_mem_gb: int = 16
    slurm_array_parallelism: int = 64
    """slurm: most array tasks running at once."""


@dataclass
class SweepConfig:
    """A grid of runs. Axes are config keys ('optim.lr', 'model.d_model')."""

    name: str = "default"
    """Sweep name, recorded with every run."""
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    """Axes combined as a cartesian product: {'optim.lr': [1e-3, 3e-3], 'train.tokens': [1e6, 2e6]}."""
    zip: List[Dict[str, List[Any]]] = field(default_factory=list)
    """Groups of axes that vary together (equal-length lists), each group then crossed with the
    rest: [{'model.d_model': [64, 128], 'model.n_layer': [2, 4]}] gives 2 shapes, not 4."""
    max_runs: int = 1000
    """Refuse to plan more runs than this (guards against a typo that explodes the grid)."""
    budgets: List[float] = field(default_factory=list)
    """IsoFLOP planning: training FLOP budgets. For each, `sizes_per_budget` shapes around the
    expected compute-optimal size (scaling_cli.budget) with the tokens that spend the budget."""
    target_params: List[float] = field(default_factory=list)
    """Planning by size: total parameter counts; each gets a shape by the rules in
    scaling_cli.budget and tokens_per_param x N tokens."""
    sizes_per_budget: int = 5
    """Shapes per FLOP budget, log-spaced over [N_opt / size_spread, N_opt * size_spread]."""
    size_spread: float = 4.0
    """How far the sizes of a budget reach on each side of the expected optimum (factor)."""
    tokens_per_param: float = 20.0
    """Tokens per parameter for target_params (20: Hoffmann et al. 2022)."""
    aspect_ratio: int = 64
    """Shape rule: d_model = aspect_ratio x n_layer (rounded to a multiple of 16)."""
    head_dim: int = 64
    """Shape rule: n_head = d_model / head_dim (at least 2, dividing d_model)."""
    extra: List[Dict[str, Any]] = field(default_factory=list)
    """More blocks of runs, each {grid: {...}, zip: [...]} expanded like the main grid (which contributes
    only when it has axes of its own) and added to it; a run planned twice is kept once. For sparse
    designs: a size x token-budget grid plus an lr axis at a few of its cells, not across all of them."""
    wsd_branches: List[float] = field(default_factory=list)
    """WSD branching (MiniCPM; Hagele et al. 2024): fractions of train.tokens, e.g. [0.25, 0.5, 1].
    Each grid point becomes one stable run plus one decay branch per fraction, each branch a
    full WSD run of fraction x train.tokens that starts from the stable run's checkpoint."""
    validate: List[Dict[str, Any]] = field(default_factory=list)
    """Validation targets: runs trained in this sweep like any other (same store, resumable, packed)
    but never fitted; `fit` predicts each from the other runs and records predicted vs actual in
    fit.json ("validation"). Each entry is one run: the sweep's base config (before grid, zip, extra
    blocks and budgets) with these keys set, e.g. [{model.d_model: 128, model.n_layer: 2, train.tokens:
    6.8e6}]; entries are not crossed with the grid. With wsd_branches a target is a WSD run of its own
    length, not a branch. Setting one of train.tokens / train.steps / train.tokens_per_param in an entry
    clears the other two for that run."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


GROUPS: Dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "store": StoreConfig,
    "launcher": LauncherConfig,
}


def register_configs() -> None:
    """Register the schemas so YAML files can extend them (`defaults: [base_model, _self_]`)."""
    cs = ConfigStore.instance()
    node = OmegaConf.structured(Config)
    # Grid axes are config keys chosen by the user, so the grid must accept new keys even though
    # the rest of the config is closed: `sweep.grid={optim.lr:[1e-3,3e-3]}` adds or replaces an axis.
    OmegaConf.set_struct(node.sweep.grid, False)
    cs.store(name="base_config", node=node)
    for group, schema in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field_name}: {message}")


_CHOICES = {
    "model.mlp": ("gelu", "swiglu"),
    "model.loss_impl": ("auto", "triton", "torch"),
    "model.parametrization": ("standard", "mup"),
    "schedule.name": ("constant", "cosine", "linear", "wsd"),
    "schedule.decay_shape": ("linear", "cosine", "sqrt"),
    "train.precision": ("auto", "bf16", "fp32"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "launcher.name": ("local", "ray", "slurm"),
    "launcher.slurm_cluster": ("slurm", "local", "debug"),
}


# train.loggers name -> the package it needs (scaling_cli/train/loggers.py writes through it).
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def validate(cfg: DictConfig | Config) -> None:
    """Check what types cannot: ranges, divisibility, choices. Raises ConfigError."""
    c = cfg
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(c, key) if isinstance(c, DictConfig) else _select(c, key)
        _require(value in choices, key, f"got {value!r}; choose one of {', '.join(choices)}")
    m, o, s, t = c.model, c.optim, c.schedule, c.train
    for name in ("d_model", "n_layer", "n_head", "seq_len", "vocab_size"):
        _require(getattr(m, name) > 0, f"model.{name}", f"must be a positive integer, got {getattr(m, name)}")
    _require(m.d_model % m.n_head == 0, "model.d_model",
             f"{m.d_model} is not divisible by model.n_head={m.n_head}; pick a width that is a multiple of the head count")
    _require((m.d_model // m.n_head) % 2 == 0, "model.n_head",
             f"head dim d_model/n_head={m.d_model // m.n_head} must be even for RoPE")
    _require(m.vocab_size >= 257, "model.vocab_size", "a byte-level BPE needs at least 257 tokens (256 bytes + EOS)")
    _require(m.z_loss >= 0, "model.z_loss", f"must be >= 0, got {m.z_loss}")
    _require(m.logit_softcap >= 0, "model.logit_softcap", f"must be >= 0 (0 disables), got {m.logit_softcap}")
    _require(m.mlp_ratio > 0, "model.mlp_ratio", f"must be > 0, got {m.mlp_ratio}")
    _require(m.init_std > 0, "model.init_std", f"must be > 0, got {m.init_std}")
    _require(m.mup_base_width > 0, "model.mup_base_width", f"must be a positive integer, got {m.mup_base_width}")
    if m.parametrization == "mup":
        # Tensor Programs V, Table 8: the output layer has its own init, LR and 1/width multiplier, unlike
        # the embedding (an input layer), so the two matrices cannot be one tensor.
        _require(not m.tied_embeddings, "model.tied_embeddings",
                 "model.parametrization=mup needs an untied output layer; set model.tied_embeddings=false")
    _require(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _require(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1/beta2", "must lie in [0, 1)")
    _require(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _require(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 disables), got {o.grad_clip}")
    _require(s.warmup >= 0, "schedule.warmup", f"must be >= 0, got {s.warmup}")
    _require(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", f"must lie in [0, 1], got {s.min_lr_ratio}")
    _require(s.decay > 0, "schedule.decay", f"must be > 0, got {s.decay}")
    if t.tokens_per_param is not None:  # the planner turns it into train.tokens (scaling_cli.plan)
        _require(t.tokens_per_param > 0, "train.tokens_per_param", f"must be > 0, got {t.tokens_per_param}")
    else:
        _require((t.tokens is None) != (t.steps is None), "train.tokens",
                 "set exactly one of train.tokens and train.steps (train.tokens=null to count steps)")
    if t.tokens is not None:
        _require(t.tokens > 0, "train.tokens", f"must be > 0, got {t.tokens}")
    if t.steps is not None:
        _require(t.steps > 0, "train.steps", f"must be > 0, got {t.steps}")
    for name in ("batch_size", "eval_interval", "eval_tokens", "log_interval", "checkpoint_interval"):
        _require(getattr(t, name) > 0, f"train.{name}", f"must be a positive integer, got {getattr(t, name)}")
    _require(t.divergence_factor > 1, "train.divergence_factor", f"must be > 1, got {t.divergence_factor}")
    _require(t.threads >= 0, "train.threads", f"must be >= 0, got {t.threads}")
    _require(t.kernel_tune_s >= 0, "train.kernel_tune_s", f"must be >= 0 seconds (0: no timing), got {t.kernel_tune_s}")
    _require(t.diagnostics_interval >= 0, "train.diagnostics_interval",
             f"must be >= 0 (0 disables), got {t.diagnostics_interval}")
    for name in t.loggers:
        _require(name in LOGGER_PACKAGES, "train.loggers", f"unknown logger {name!r}; choose from {', '.join(LOGGER_PACKAGES)}")
        _require(importlib.util.find_spec(LOGGER_PACKAGES[name]) is not None, "train.loggers",
                 f"{name} is not installed; pip install 'scaling-cli[{name}]' or drop it from train.loggers")
    sw = c.sweep
    _require(all(b > 0 for b in sw.budgets), "sweep.budgets", "every FLOP budget must be > 0")
    _require(all(n > 0 for n in sw.target_params), "sweep.target_params", "every target size must be > 0")
    _require(sw.sizes_per_budget >= 1, "sweep.sizes_per_budget", "must be >= 1")
    _require(sw.size_spread >= 1, "sweep.size_spread", "must be >= 1")
    _require(sw.tokens_per_param > 0, "sweep.tokens_per_param", "must be > 0")
    _require(sw.aspect_ratio >= 16 and sw.head_dim >= 2, "sweep.aspect_ratio", "aspect_ratio >= 16, head_dim >= 2")
    _require(all(0 < f <= 1 for f in sw.wsd_branches), "sweep.wsd_branches", "fractions must lie in (0, 1]")
    _require(not sw.wsd_branches or c.schedule.name == "wsd", "sweep.wsd_branches",
             f"branching needs schedule=wsd, got schedule.name={c.schedule.name!r}")
    validate_eval(c.eval)
    lc = c.launcher
    _require(lc.workers >= 0, "launcher.workers", f"must be >= 0 (0: one per GPU), got {lc.workers}")
    _require(lc.pack_size >= 0, "launcher.pack_size", f"must be >= 0 (0: from GPU memory, 1: no packing), got {lc.pack_size}")
    _require(lc.pack_max >= 1, "launcher.pack_max", f"must be >= 1, got {lc.pack_max}")
    _require(0 < lc.pack_memory_fraction <= 1, "launcher.pack_memory_fraction",
             f"must lie in (0, 1], got {lc.pack_memory_fraction}")
    _require(lc.lease_ttl_s > 0, "launcher.lease_ttl_s", f"must be > 0, got {lc.lease_ttl_s}")
    d = c.data
    _require(0 < d.val_fraction < 1, "data.val_fraction", f"must lie in (0, 1), got {d.val_fraction}")
    _require(len(d.languages) > 0, "data.languages", "name at least one language (en, es)")


def _select(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
