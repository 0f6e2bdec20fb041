"""The regimes every claim is evaluated in, and the settings of a verification run.

A regime is a training recipe (an ``SFTConfig`` without its seed). Seed ``s`` of a regime trains
with ``SFTConfig(seed=s)`` on the data of ``DataConfig(seed=s)``, so every seed has its own
initialization, training batches and eval statements. Models are trained by ``cached_sft`` and so
reused across runs (keyed by the configs' hash).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from entangle_jax.config import (ConfigError, DataConfig, ModelConfig, SFTConfig, positive_ints,
                                 require)
from entangle_jax.data.chat_sentiment import ChatSentimentConfig
from entangle_jax.data.sentiment import SHAPES
from entangle_jax.verify.stats import RESOLUTION


@dataclass(frozen=True)
class Regime:
    """A training recipe. A tiny regime trains a tiny model from scratch (``sft``); a pretrained
    regime starts from ``pretrained`` (a name of ``entangle_jax.pretrained``) and fine-tunes the
    parameter subset ``train_params`` for ``sft.steps`` steps (none: the model as shipped).
    ``stands_for`` names the tiny regime whose role it plays for the claims' headlines."""

    name: str
    description: str
    sft: SFTConfig
    pretrained: str | None = None
    train_params: str = "all"
    stands_for: str | None = None

    def sft_config(self, seed: int) -> SFTConfig:
        return dataclasses.replace(self.sft, seed=seed)


#: The regime map. The recipes were fixed from what each regime is meant to be, not from the
#: verdicts they produce.
REGIMES: tuple[Regime, ...] = (
    Regime("random_init", "random initialization, no training", SFTConfig(steps=0)),
    Regime("uncertain_sft", "SFT 300 steps with 30% of the sentiment labels flipped: the model "
           "stays uncertain between Positive and Negative", SFTConfig(label_flip=0.3)),
    Regime("confident_sft", "SFT 300 steps on clean labels: the model becomes confident "
           "(p_w close to 1)", SFTConfig()),
    Regime("fixed_suffix", "SFT 300 steps, always with the full 12-token suffix: that suffix "
           "becomes deterministic (a shorter suffix ends with '.' where the model expects the "
           "next suffix word)", SFTConfig(suffix="fixed")),
    Regime("pretrained", "300 steps on statements followed by random words (varied "
           "continuations), then a short SFT of 50 steps: closest to the paper's GPT-2 setting",
           SFTConfig(pretrain_steps=300, steps=50)),
)

#: The pretrained model's regimes (``entangle verify --real``). Seeds draw the eval pairs and,
#: where it trains, the run.
REAL_REGIMES: tuple[Regime, ...] = (
    Regime("smollm2", "SmolLM2-135M-Instruct as shipped, zero-shot: the closest to the paper's "
           "pretrained models", SFTConfig(steps=0), pretrained="smollm2", stands_for="pretrained"),
    Regime("smollm2_sft", "SmolLM2-135M-Instruct after 40 AdamW steps (batch 16, learning rate "
           "1e-4) on the last 2 blocks and the final norm, on the chat sentiment task with 30% "
           "of the labels flipped: it answers with a sentiment word and stays uncertain",
           SFTConfig(steps=40, batch_size=16, learning_rate=1e-4, weight_decay=0.0,
                     label_flip=0.3), pretrained="smollm2", train_params="last:2",
           stands_for="uncertain_sft"),
)


@dataclass(frozen=True)
class VerifySettings:
    """Everything that determines a verification run's numbers (hashed into ``config_hash``).

    ``n_pairs`` eval pairs per seed; suffix lengths run over ``0..data.max_suffix_length``;
    ``long_suffix`` is the paper's long suffix ("sentiment based on my judgement .", 6 tokens):
    the suffix of the token-wise Gram and of the short DPO run, and with 0 and 2 (single, short)
    one of the ``shapes`` of the one-step checks;
    ``ntk_pairs`` pairs per seed get the explicit logit eNTK; ``precision`` of the gradient
    arithmetic (the models train in float32; their parameters are cast for the checks);
    ``run_*`` the short batched DPO run of ``batched_dynamics`` (steps, batch, trained
    parameters); ``chat`` the task of pretrained regimes."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    regimes: tuple[Regime, ...] = REGIMES
    seeds: tuple[int, ...] = (0, 1, 2)
    n_pairs: int = 64
    long_suffix: int = 6
    ntk_pairs: int = 8
    precision: str = "float64"
    n_boot: int = 2000
    chat: ChatSentimentConfig = ChatSentimentConfig()
    run_steps: int = 20
    run_batch: int = 32
    run_train_params: str = "all"

    def __post_init__(self):
        require(self, "seeds", len(self.seeds) > 0
                and all(isinstance(s, int) and s >= 0 for s in self.seeds)
                and len(set(self.seeds)) == len(self.seeds),
                "must be distinct integers >= 0, at least one")
        require(self, "n_pairs", isinstance(self.n_pairs, int) and self.n_pairs >= 2,
                "must be an integer >= 2")
        require(self, "long_suffix", isinstance(self.long_suffix, int)
                and 2 <= self.long_suffix <= self.data.max_suffix_length,
                f"must be an integer in 2..{self.data.max_suffix_length}")
        require(self, "data", self.data.max_suffix_length >= 2,
                "needs max_suffix_length >= 2 (the shortest suffix of the paper has 2 tokens)")
        require(self, "ntk_pairs", isinstance(self.ntk_pairs, int)
                and 1 <= self.ntk_pairs <= self.n_pairs,
                f"must be an integer in 1..n_pairs={self.n_pairs}")
        require(self, "precision", self.precision in RESOLUTION,
                f"one of {', '.join(RESOLUTION)}")
        require(self, "n_boot", isinstance(self.n_boot, int) and self.n_boot >= 100,
                "must be an integer >= 100")
        positive_ints(self, "run_steps", "run_batch")
        names = [r.name for r in self.regimes]
        require(self, "regimes", len(names) > 0 and len(set(names)) == len(names),
                "must be distinct regimes, at least one")
        require(self, "regimes", len({r.pretrained is None for r in self.regimes}) == 1,
                "must be all tiny or all pretrained (their tasks differ)")
        require(self, "long_suffix", self.long_suffix <= self.max_suffix,
                f"must be at most the task's longest suffix {self.max_suffix}")

    @property
    def pretrained(self) -> bool:
        return self.regimes[0].pretrained is not None

    @property
    def resolution(self) -> float:
        return RESOLUTION[self.precision]

    @property
    def max_suffix(self) -> int:
        return (self.chat if self.pretrained else self.data).max_suffix_length

    @property
    def shapes(self) -> tuple[int, ...]:
        """The paper's pair shapes: single (L=0), short (L=2) and long (``long_suffix``)."""
        return tuple(sorted({SHAPES["single"], SHAPES["short"], self.long_suffix}))

    def data_config(self, seed: int) -> DataConfig:
        return dataclasses.replace(self.data, seed=seed)

    def task_config(self, seed: int):
        """The sentiment task of seed ``seed``: the chat task for pretrained regimes."""
        return dataclasses.replace(self.chat if self.pretrained else self.data, seed=seed)

    def regime(self, name: str) -> Regime:
        """The regime called ``name``, or the one that stands for it."""
        for r in self.regimes:
            if r.name == name:
                return r
        for r in self.regimes:
            if r.stands_for == name:
                return r
        raise ConfigError(f"regime {name!r} is unknown; known: "
                          f"{', '.join(r.name for r in self.regimes)}")


#: What a smoke run changes: one seed and 16 pairs per regime (every check still runs).
QUICK = {"seeds": (0,), "n_pairs": 16, "ntk_pairs": 2, "n_boot": 500}


def quick_settings(**overrides) -> VerifySettings:
    """A smoke run of the tiny regimes (``QUICK``)."""
    return VerifySettings(**{**QUICK, **overrides})


def real_settings(**overrides) -> VerifySettings:
    """The pretrained model's regimes on the chat sentiment task (suffixes up to the paper's long
    one, L ≤ 6), 3 seeds of 64 pairs, in float32 (2 CPU cores cannot afford float64 there;
    signs are resolved at float32's resolution); the batched run trains the last 2 blocks, 10
    steps of 16 pairs."""
    return VerifySettings(**{"regimes": REAL_REGIMES, "precision": "float32",
                             "chat": ChatSentimentConfig(max_suffix_length=6), "run_steps": 10,
                             "run_batch": 16, "run_train_params": "last:2", **overrides})
