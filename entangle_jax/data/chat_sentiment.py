"""The paper's sentiment task for a pretrained chat model: statements built from real words with
human sentiment ratings, asked through the model's chat template.

Words: the VADER lexicon (Hutto & Gilbert 2014; ``entangle_jax/resources``), 7,520 entries with
the ratings of ten people on −4…+4. Kept: lowercase alphabetic entries with |mean| ≥ 1.5 whose ten
ratings all share the sign of the mean (none neutral): clear, unanimous words (1,219 positive,
1,587 negative); of these, the common words: at least four letters and a single token of the
model's vocabulary after a space, which drops the lexicon's chat acronyms ("aayf", "btd") and
rare forms (SmolLM2: 502 positive, 531 negative). The data are balanced by sentiment, and train
and eval statements use disjoint words, so the eval pairs ask about words a fine-tuned model
never saw.

A statement is a template with a subject and a word, e.g. 'Asked about the hotel, my friend said
just one word: "wonderful".' The prompt is two chat turns::

    system: You label the sentiment of statements.
    user:   {statement}
            Is the sentiment of this statement positive or negative? Answer with one word:
            Positive or Negative.

and the responses are the paper's shapes: the sentiment word ("Positive" / "Negative", one token
each at the start of an assistant turn of SmolLM2's vocabulary; ``chat_sentiment_pairs`` checks
it for the model at hand) followed by the suffix of L tokens, the first L − 1 of
" sentiment based on my judgement of this statement as an attentive reader" closed by ".":
L = 0 single, 2 short ("Positive sentiment."), 6 long ("Positive sentiment based on my
judgement."), any length up to 12 in between (each word and the "." are one token).
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np

from entangle_jax.config import ConfigError, MAX_SUFFIX_LENGTH, positive_ints, require
from entangle_jax.data.bpe import ChatTokenizer
from entangle_jax.data.pairs import Pairs, Responses, pack_responses, padded_length
from entangle_jax.data.sentiment import SUBJECTS, SUFFIX_WORDS

POSITIVE, NEGATIVE = "Positive", "Negative"
#: A clear word: |mean rating| ≥ this, and every rating on the mean's side.
CLEAR_MEAN = 1.5
SYSTEM = "You label the sentiment of statements."
QUESTION = ("Is the sentiment of this statement positive or negative? Answer with one word: "
            "Positive or Negative.")
TEMPLATES = (
    'Asked about {s}, my friend said just one word: "{w}".',
    'A customer described {s} with a single word: "{w}".',
    'The only comment on {s} in the review was "{w}".',
    'When I think of {s}, one word comes to mind: "{w}".',
    'Her one-word summary of {s}: "{w}".',
    'In the survey, {s} was described as "{w}".',
)


def lexicon() -> list[tuple[str, float, tuple[int, ...]]]:
    """The VADER lexicon: ``(token, mean rating, the ten ratings)`` per entry."""
    raw = resources.files("entangle_jax.resources").joinpath("vader_lexicon.txt.gz").read_bytes()
    entries = []
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        token, mean, _, ratings = line.split("\t")
        entries.append((token, float(mean), tuple(int(r) for r in ratings.strip("[]").split(","))))
    return entries


@functools.cache
def clear_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(positive, negative)`` clear words (module docstring), in lexicon order."""
    positive, negative = [], []
    for token, mean, ratings in lexicon():
        if not (token.isalpha() and token.islower() and abs(mean) >= CLEAR_MEAN):
            continue
        if all(r * mean > 0 for r in ratings):
            (positive if mean > 0 else negative).append(token)
    return tuple(positive), tuple(negative)


def common_words(tokenizer: ChatTokenizer) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The clear words that are common for ``tokenizer``'s model (module docstring)."""
    def common(word: str) -> bool:
        return len(word) >= 4 and len(tokenizer.encode(" " + word)) == 1

    return tuple(tuple(filter(common, words)) for words in clear_words())


@dataclass(frozen=True)
class ChatSentimentConfig:
    """The chat sentiment task: ``n_statements`` statements (half positive), the words of an
    ``eval_fraction`` of them held out for evaluation, suffixes up to ``max_suffix_length``."""

    seed: int = 0
    n_statements: int = 2000
    eval_fraction: float = 0.2
    max_suffix_length: int = 6

    def __post_init__(self):
        positive_ints(self, "n_statements", "max_suffix_length")
        require(self, "seed", isinstance(self.seed, int) and self.seed >= 0,
                "must be an integer >= 0")
        require(self, "eval_fraction", isinstance(self.eval_fraction, float)
                and 0 < self.eval_fraction < 1, "must lie strictly between 0 and 1")
        require(self, "max_suffix_length", self.max_suffix_length <= MAX_SUFFIX_LENGTH,
                f"must be at most {MAX_SUFFIX_LENGTH}")


@dataclass(frozen=True)
class ChatStatement:
    text: str
    word: str
    positive: bool

    @property
    def turns(self) -> tuple[tuple[str, str], ...]:
        return (("system", SYSTEM), ("user", f"{self.text}\n{QUESTION}"))


@dataclass(frozen=True)
class ChatSentimentData:
    train: tuple[ChatStatement, ...]
    eval: tuple[ChatStatement, ...]
    config: ChatSentimentConfig


def make_chat_sentiment_data(config: ChatSentimentConfig, tokenizer: ChatTokenizer
                             ) -> ChatSentimentData:
    """Statements of ``config`` for ``tokenizer``'s model (deterministic for the seed): the
    common words of each sentiment are split into train and eval, then each statement draws a
    word of its side, a template and a subject."""
    rng = np.random.default_rng([config.seed, 7])
    split = {}
    for positive, words in zip((True, False), common_words(tokenizer)):
        order = rng.permutation(len(words))
        n_eval = max(1, int(round(config.eval_fraction * len(words))))
        split[positive] = ([words[i] for i in order[n_eval:]], [words[i] for i in order[:n_eval]])

    def draw(n: int, part: int) -> list[ChatStatement]:
        out = []
        for k in range(n):
            positive = k % 2 == 0
            words = split[positive][part]
            word = words[rng.integers(len(words))]
            text = TEMPLATES[rng.integers(len(TEMPLATES))].format(
                s=SUBJECTS[rng.integers(len(SUBJECTS))], w=word)
            out.append(ChatStatement(text, word, positive))
        return [out[i] for i in rng.permutation(n)]

    n_eval = max(1, int(round(config.eval_fraction * config.n_statements)))
    return ChatSentimentData(tuple(draw(config.n_statements - n_eval, 0)),
                             tuple(draw(n_eval, 1)), config)


def response_text(positive: bool, suffix_length: int) -> str:
    """The sentiment word and the suffix of ``suffix_length`` tokens (module docstring)."""
    if not 0 <= suffix_length <= MAX_SUFFIX_LENGTH:
        raise ConfigError(f"suffix length {suffix_length} is invalid: must be in "
                          f"0..{MAX_SUFFIX_LENGTH}")
    suffix = "" if suffix_length == 0 else \
        "".join(f" {w}" for w in SUFFIX_WORDS[:suffix_length - 1]) + "."
    return (POSITIVE if positive else NEGATIVE) + suffix


def _response_ids(tokenizer: ChatTokenizer, positive: bool, suffix_length: int) -> list[int]:
    ids = tokenizer.encode(response_text(positive, suffix_length))
    if len(ids) != suffix_length + 1:
        raise ConfigError(f"{response_text(positive, suffix_length)!r} is {len(ids)} tokens of "
                          f"this vocabulary, not {suffix_length + 1}: the sentiment word and each "
                          "suffix word must be single tokens")
    return ids


def chat_sentiment_pairs(statements, tokenizer: ChatTokenizer, suffix_length: int,
                         max_suffix_length: int) -> Pairs:
    """Chosen = the true sentiment with the suffix of ``suffix_length`` tokens, rejected = the
    false one with the same suffix, both after the chat prompt of the statement. The sequence
    length and response window fit ``max_suffix_length``, so every suffix length shares one
    compiled shape."""
    prompts = [tokenizer.encode_chat(s.turns) for s in statements]
    window = max_suffix_length + 1
    seq_len = padded_length(max(map(len, prompts)) + window)

    def side(chosen: bool) -> Responses:
        responses = [_response_ids(tokenizer, s.positive == chosen, suffix_length)
                     for s in statements]
        return pack_responses(prompts, responses, seq_len, window, tokenizer.pad_id)

    return Pairs(side(True), side(False))


def chat_seq_len(data: ChatSentimentData, tokenizer: ChatTokenizer) -> int:
    """One sequence length for every statement of ``data`` with the longest suffix."""
    longest = max(len(tokenizer.encode_chat(s.turns)) for s in (*data.train, *data.eval))
    return padded_length(longest + data.config.max_suffix_length + 1)


def chat_sft_batch(data: ChatSentimentData, tokenizer: ChatTokenizer, label_flip: float,
                   batch_size: int, seq_len: int, rng: np.random.Generator) -> Responses:
    """Prompt + the true sentiment (flipped with probability ``label_flip``) with a suffix of
    random length 0..max, for supervised fine-tuning (``seq_len``: ``chat_seq_len``)."""
    max_suffix = data.config.max_suffix_length
    picks = [data.train[i] for i in rng.integers(0, len(data.train), batch_size)]
    flips = rng.random(batch_size) < label_flip
    lengths = rng.integers(0, max_suffix + 1, batch_size)
    prompts = [tokenizer.encode_chat(s.turns) for s in picks]
    responses = [_response_ids(tokenizer, s.positive != bool(f), int(n))
                 for s, f, n in zip(picks, flips, lengths)]
    return pack_responses(prompts, responses, seq_len, max_suffix + 1, tokenizer.pad_id)
