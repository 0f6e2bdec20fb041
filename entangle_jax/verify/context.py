"""One trained model of one regime and seed, with its measurements computed once and shared.

Several claims need the same numbers (⟨g_w, g_l⟩ at every suffix length feeds Theorems 1 and 3);
``ModelContext`` computes each on first use and keeps it. Its parameters are cast to the run's
precision (float64 by default, so that signs of small inner products are trustworthy); every
computation on them, and the context's construction, must run inside ``precision_scope(settings)``.
"""

from __future__ import annotations

import contextlib
from functools import cached_property

import jax
import numpy as np

from entangle_jax.checkpoint import Checkpoint
from entangle_jax.data.pairs import Pairs
from entangle_jax.data.tasks import make_task_data, task_pairs
from entangle_jax.gradients import OutputLayerCheck, PairGeometry, TokenGrams, output_layer_check
from entangle_jax.gradients import pair_geometry, token_grams
from entangle_jax.models import in_precision
from entangle_jax.verify.ntk import SentimentNTK, sentiment_ntk
from entangle_jax.verify.regimes import Regime, VerifySettings


def precision_scope(settings: VerifySettings):
    """``jax.enable_x64`` for a float64 run, nothing for float32."""
    if settings.precision == "float64":
        return jax.enable_x64(True)
    return contextlib.nullcontext()


class ModelContext:
    """The model of ``regime`` at ``seed`` and its lazily computed measurements."""

    def __init__(self, ckpt: Checkpoint, regime: Regime, seed: int, settings: VerifySettings):
        self.ckpt, self.regime, self.seed, self.settings = ckpt, regime, seed, settings
        _, self.graphdef, self.params = in_precision(ckpt.model_config, ckpt.params,
                                                     settings.precision)
        # per-example gradients of a pretrained model do not fit memory in chunks: stream taps
        self.implementation = "auto" if settings.pretrained else "materialize"
        self._pairs: dict[int, Pairs] = {}
        self._geometry: dict[int, PairGeometry] = {}
        self._grams: dict[int, TokenGrams] = {}
        self._memo: dict = {}

    def memo(self, key, compute):
        """``compute()`` once per ``key``: results that several claims share."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @cached_property
    def data(self):
        """The seed's sentiment task (``data.tasks``): words for a tiny model, the chat task for
        a pretrained one."""
        return make_task_data(self.settings.task_config(self.seed), self.ckpt.tokenizer)

    @property
    def resolution(self) -> float:
        return self.settings.resolution

    def pairs(self, suffix_length: int) -> Pairs:
        """The first ``n_pairs`` eval statements (the split is already shuffled by the data seed)
        as pairs with a shared suffix of ``suffix_length`` tokens."""
        if suffix_length not in self._pairs:
            self._pairs[suffix_length] = task_pairs(
                self.data, self.ckpt.tokenizer, self.data.eval[:self.settings.n_pairs],
                suffix_length, self.ckpt.model_config.max_len)
        return self._pairs[suffix_length]

    def geometry(self, suffix_length: int) -> PairGeometry:
        if suffix_length not in self._geometry:
            self._geometry[suffix_length] = pair_geometry(
                self.graphdef, self.params, self.pairs(suffix_length),
                implementation=self.implementation)
        return self._geometry[suffix_length]

    def geometry_by_length(self) -> dict[str, np.ndarray]:
        """``inner``, ``sq_norm_w``, ``sq_norm_l`` as ``[n_pairs, max_suffix + 1]`` (column L)."""
        geos = [self.geometry(L) for L in range(self.settings.max_suffix + 1)]
        return {name: np.stack([getattr(g, name) for g in geos], axis=1)
                for name in ("inner", "sq_norm_w", "sq_norm_l", "logp_w", "logp_l")}

    def grams(self, suffix_length: int) -> TokenGrams:
        if suffix_length not in self._grams:
            self._grams[suffix_length] = token_grams(
                self.graphdef, self.params, self.pairs(suffix_length),
                implementation=self.implementation)
        return self._grams[suffix_length]

    @cached_property
    def output_layer(self) -> OutputLayerCheck:
        """The unembedding-restricted identity at the sentiment token (p_w, p_l come with it)."""
        return output_layer_check(self.graphdef, self.params, self.pairs(0))

    @cached_property
    def ntk(self) -> SentimentNTK | None:
        """The explicit logit-eNTK form on the first ``ntk_pairs`` pairs (None with a tied
        embedding, where the form does not separate: ``verify.ntk``)."""
        if self.ckpt.model_config.tie_embeddings:
            return None
        return sentiment_ntk(self.graphdef, self.params, self.pairs(0)[:self.settings.ntk_pairs])
