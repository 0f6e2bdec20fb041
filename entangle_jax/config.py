"""Frozen, validated configurations: the model, the data and supervised fine-tuning.

Every config validates itself in ``__post_init__``: a bad value fails at once with a ``ConfigError``
that names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: The parameter dtypes a model can be built in.
ParamDtype = Literal["float32", "float64"]
#: SFT suffix lengths: a random one per example, or always the full suffix.
SuffixMode = Literal["varied", "fixed"]


#: The longest response suffix the synthetic data can build (see ``data.sentiment.SUFFIX_WORDS``).
MAX_SUFFIX_LENGTH = 13


class ConfigError(ValueError):
    """A config field holds a value outside what is allowed."""


def _require(ok: bool, cls: str, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{cls}.{field}={value!r} is invalid: {allowed}")


def require(obj, field: str, ok: bool, allowed: str) -> None:
    """Raise ``ConfigError`` naming ``obj``'s class, ``field``, its value and ``allowed`` unless ``ok``
    (the validation every config of the project uses, in this module or beside its consumer)."""
    _require(ok, type(obj).__name__, field, getattr(obj, field), allowed)


def one_of(obj, field: str, choices) -> None:
    """``require`` that ``field`` is one of ``choices`` (a ``Literal`` type or a sequence)."""
    options = get_args(choices) or tuple(choices)
    require(obj, field, getattr(obj, field) in options,
            f"one of {', '.join(map(repr, options))}")


def positive_ints(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(obj, name, isinstance(value, int) and not isinstance(value, bool) and value > 0,
                "must be a positive integer")


def nonnegative_ints(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(obj, name, isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                "must be an integer >= 0")


def _finite_reals(obj, *names: str) -> None:
    """Checked before any comparison, so a string or None fails as a ConfigError, not a TypeError."""
    for name in names:
        value = getattr(obj, name)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool)
                 and math.isfinite(value), type(obj).__name__, name, value,
                 "must be a finite number")


def _bools(obj, *names: str) -> None:
    for name in names:
        _require(isinstance(getattr(obj, name), bool), type(obj).__name__, name,
                 getattr(obj, name), "must be true or false")


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only causal transformer (pre-LayerNorm).

    ``vocab_size`` is filled from the tokenizer; ``max_len`` bounds prompt + response length.
    """

    vocab_size: int = 512
    max_len: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 256
    tie_embeddings: bool = False
    unembed_bias: bool = False
    param_dtype: ParamDtype = "float32"

    def __post_init__(self):
        positive_ints(self, "vocab_size", "max_len", "d_model", "n_layers", "n_heads", "d_mlp")
        _bools(self, "tie_embeddings", "unembed_bias")
        name = type(self).__name__
        _require(self.d_model % self.n_heads == 0, name, "n_heads", self.n_heads,
                 f"must divide d_model={self.d_model}")
        one_of(self, "param_dtype", ParamDtype)


@dataclass(frozen=True)
class LlamaConfig:
    """A Llama-architecture decoder (RMSNorm, rotary positions, grouped-query attention, SiLU-gated
    MLP, no biases), as read from a checkpoint's metadata. The defaults are a small random model
    for tests; ``pretrained`` fills them from SmolLM2-135M-Instruct's GGUF file.

    ``n_kv_heads`` key/value heads serve ``n_heads`` query heads; ``rope_theta`` is the rotary
    base; ``max_len`` the longest sequence the checkpoint was trained for."""

    vocab_size: int = 512
    max_len: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    d_mlp: int = 128
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    param_dtype: ParamDtype = "float32"

    def __post_init__(self):
        positive_ints(self, "vocab_size", "max_len", "d_model", "n_layers", "n_heads",
                      "n_kv_heads", "head_dim", "d_mlp")
        _finite_reals(self, "rope_theta", "rms_eps")
        _bools(self, "tie_embeddings")
        require(self, "n_kv_heads", self.n_heads % self.n_kv_heads == 0,
                f"must divide n_heads={self.n_heads}")
        require(self, "head_dim", self.head_dim % 2 == 0, "must be even (rotary pairs)")
        require(self, "rope_theta", self.rope_theta > 1, "must be > 1")
        require(self, "rms_eps", self.rms_eps > 0, "must be > 0")
        one_of(self, "param_dtype", ParamDtype)


@dataclass(frozen=True)
class DataConfig:
    """The synthetic sentiment preference task.

    ``max_suffix_length`` is the largest suffix length L (response = sentiment token + L tokens).
    ``eval_fraction`` of the distinct statements go to the eval split, the rest to train.
    """

    seed: int = 0
    n_statements: int = 4000
    eval_fraction: float = 0.2
    max_suffix_length: int = 12
    n_unused_words: int = 64

    def __post_init__(self):
        positive_ints(self, "n_statements", "max_suffix_length")
        _finite_reals(self, "eval_fraction")
        name = type(self).__name__
        _require(isinstance(self.seed, int) and self.seed >= 0, name, "seed", self.seed,
                 "must be an integer >= 0")
        _require(0.0 < self.eval_fraction < 1.0, name, "eval_fraction", self.eval_fraction,
                 "must lie strictly between 0 and 1")
        _require(self.max_suffix_length <= MAX_SUFFIX_LENGTH, name, "max_suffix_length",
                 self.max_suffix_length, f"must be at most {MAX_SUFFIX_LENGTH}")
        _require(isinstance(self.n_unused_words, int) and self.n_unused_words >= 0, name,
                 "n_unused_words", self.n_unused_words, "must be an integer >= 0")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on prompt + chosen response (the mean next-token loss over prompt and
    response, ``logprob.lm_loss``).

    ``label_flip`` is the fraction of training examples whose sentiment token is flipped (keeps the
    model uncertain between Positive and Negative). ``suffix`` is ``"varied"`` (L drawn uniformly from
    0..max_suffix_length per example) or ``"fixed"`` (always the full suffix, so the suffix becomes
    deterministic and its gradients vanish). ``steps=0`` leaves the random initialization.
    ``pretrain_steps`` first trains on statements followed by random vocabulary words (varied
    continuations), the regime closest to a pretrained LM.
    """

    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    label_flip: float = 0.0
    suffix: SuffixMode = "varied"
    pretrain_steps: int = 0
    seed: int = 0

    def __post_init__(self):
        name = type(self).__name__
        nonnegative_ints(self, "steps", "pretrain_steps", "seed")
        positive_ints(self, "batch_size")
        _finite_reals(self, "learning_rate", "weight_decay", "label_flip")
        _require(self.learning_rate > 0, name, "learning_rate", self.learning_rate, "must be > 0")
        _require(self.weight_decay >= 0, name, "weight_decay", self.weight_decay, "must be >= 0")
        _require(0.0 <= self.label_flip <= 1.0, name, "label_flip", self.label_flip,
                 "must lie in [0, 1]")
        one_of(self, "suffix", SuffixMode)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
