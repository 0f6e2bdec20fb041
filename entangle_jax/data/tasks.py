"""The sentiment task behind one interface, for either kind of model.

A tiny model reads the word-level task (``data.sentiment``, configured by ``DataConfig``, its own
vocabulary); a pretrained chat model reads the same task built from real words and asked through
its chat template (``data.chat_sentiment``, configured by ``ChatSentimentConfig``). Both give
statements split into train and eval and, for a suffix length L, pairs whose chosen and rejected
responses differ in the sentiment token and share the suffix; the config's type says which.
"""

from __future__ import annotations

from entangle_jax.config import DataConfig
from entangle_jax.data.chat_sentiment import (ChatSentimentConfig, chat_sentiment_pairs,
                                              make_chat_sentiment_data)
from entangle_jax.data.pairs import Pairs, sentiment_pairs
from entangle_jax.data.sentiment import make_sentiment_data, response_window

#: Task config type → name, as reports and checkpoints record it.
TASKS = {DataConfig: "sentiment", ChatSentimentConfig: "chat_sentiment"}


def task_name(config) -> str:
    return TASKS[type(config)]


def task_config_class(name: str):
    return {v: k for k, v in TASKS.items()}[name]


def make_task_data(config, tokenizer):
    """The statements of the task ``config`` describes (``SentimentData`` or
    ``ChatSentimentData``); a chat task picks its words for ``tokenizer``."""
    if isinstance(config, ChatSentimentConfig):
        return make_chat_sentiment_data(config, tokenizer)
    return make_sentiment_data(config)


def task_pairs(data, tokenizer, statements, suffix_length: int, max_len: int) -> Pairs:
    """Pairs of ``statements`` of the task ``data`` with a suffix of ``suffix_length`` tokens, in
    one shape for every suffix length of the task."""
    if isinstance(data.config, ChatSentimentConfig):
        return chat_sentiment_pairs(statements, tokenizer, suffix_length,
                                    data.config.max_suffix_length)
    return sentiment_pairs(statements, tokenizer, suffix_length, max_len,
                           response_window(data.config))
