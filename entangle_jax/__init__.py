"""entangle_jax: numerical checks of gradient entanglement in margin-based preference optimization
(Yuan et al., "A Common Pitfall of Margin-based Language Model Alignment: Gradient Entanglement")."""

from entangle_jax.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from entangle_jax.config import ConfigError, DataConfig, ModelConfig, SFTConfig
from entangle_jax.data import (Pairs, Responses, make_sentiment_data, response_window,
                               sentiment_pairs)
from entangle_jax.gradients import output_layer_check, pair_geometry, token_grams
from entangle_jax.logprob import sequence_logprob, token_logprobs
from entangle_jax.models import Transformer, init_model

__version__ = "0.1.0"

__all__ = ["Checkpoint", "ConfigError", "DataConfig", "ModelConfig", "Pairs", "Responses",
           "SFTConfig", "Transformer", "init_model", "load_checkpoint", "make_sentiment_data",
           "output_layer_check", "pair_geometry", "response_window", "save_checkpoint",
           "sentiment_pairs", "sequence_logprob", "token_grams", "token_logprobs"]
