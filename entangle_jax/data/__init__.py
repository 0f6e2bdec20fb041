"""Data: the synthetic sentiment task, the word-level vocabulary and padded token batches."""

from entangle_jax.data.pairs import Pairs, Responses, encode_responses, sentiment_pairs
from entangle_jax.data.sentiment import (SHAPES, SentimentData, Statement, make_sentiment_data,
                                         parse_suffix_lengths, response_window, response_words,
                                         suffix_tokens)
from entangle_jax.data.vocab import Vocab

__all__ = ["Pairs", "Responses", "SHAPES", "SentimentData", "Statement", "Vocab",
           "encode_responses", "make_sentiment_data", "parse_suffix_lengths", "response_window", "response_words",
           "sentiment_pairs", "suffix_tokens"]
