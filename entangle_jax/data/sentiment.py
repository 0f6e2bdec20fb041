"""The synthetic sentiment preference task.

A statement ``x`` has a known sentiment. The chosen response names the true sentiment, the rejected one
the false sentiment, and both continue with the same suffix of L tokens::

    x = "the movie was wonderful . =>"
    y_w = "Positive sentiment based on my judgement ."      (L = 6)
    y_l = "Negative sentiment based on my judgement ."

The suffix of length L is the first L-1 words of ``SUFFIX_WORDS`` closed by "." (L = 0: nothing). This
gives the paper's three shapes exactly: ``single`` (L=0), ``short`` "sentiment ." (L=2) and ``long``
"sentiment based on my judgement ." (L=6), and every length in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entangle_jax.config import MAX_SUFFIX_LENGTH, ConfigError, DataConfig
from entangle_jax.data.vocab import Vocab

POSITIVE, NEGATIVE = "Positive", "Negative"
ANSWER_CUE = "=>"
PERIOD = "."
SUFFIX_WORDS = ("sentiment", "based", "on", "my", "judgement", "of", "this", "statement", "as",
                "an", "attentive", "reader")
assert len(SUFFIX_WORDS) + 1 == MAX_SUFFIX_LENGTH

SHAPES = {"single": 0, "short": 2, "long": 6}

TEMPLATES = (
    "{s} was {a} .",
    "i found {s} {a} .",
    "honestly , {s} is {a} .",
    "everyone agrees that {s} was {a} .",
    "my friend said {s} felt {a} .",
    "we thought {s} seemed {a} .",
    "after a long day , {s} was {a} .",
    "the review says {s} is {a} .",
    "overall {s} turned out {a} .",
    "to be fair , {s} looked {a} today .",
    "in my view {s} was truly {a} .",
    "last night {s} was {a} .",
)

POSITIVE_WORDS = (
    "wonderful", "great", "excellent", "amazing", "delightful", "fantastic", "superb", "brilliant",
    "lovely", "charming", "enjoyable", "pleasant", "marvelous", "outstanding", "terrific",
    "splendid", "impressive", "beautiful", "fun", "heartwarming", "uplifting", "satisfying",
    "remarkable", "stunning", "refreshing", "inspiring", "magnificent", "exceptional", "gorgeous",
    "joyful", "cheerful", "fabulous", "perfect", "awesome", "captivating", "engaging", "elegant",
    "thrilling", "wholesome", "really good", "very kind", "a real joy",
)
NEGATIVE_WORDS = (
    "terrible", "awful", "horrible", "dreadful", "boring", "disappointing", "poor", "bad",
    "miserable", "dull", "mediocre", "unpleasant", "annoying", "frustrating", "tedious", "lousy",
    "pathetic", "atrocious", "disgusting", "depressing", "painful", "bland", "clumsy", "messy",
    "sloppy", "ugly", "rude", "tiresome", "worthless", "unbearable", "weak", "gloomy", "hideous",
    "nasty", "shoddy", "dismal", "appalling", "abysmal", "irritating", "really bad", "very rude",
    "a total mess",
)
SUBJECTS = (
    "the movie", "the restaurant", "the hotel", "the book", "the concert", "the service",
    "the teacher", "the game", "the weather", "the trip", "the coffee", "the album", "the show",
    "the museum", "the meal", "the play", "the lecture", "the party", "the apartment", "the car",
    "the phone", "the flight", "the staff", "the garden", "the song", "the painting", "the hike",
    "the festival", "the class", "the workshop", "the interview", "the pizza", "the bakery",
    "the store", "the app", "the website", "the team", "the episode", "the novel", "the beach",
    "the park", "the course", "the doctor", "the neighbor", "my new laptop", "our tour guide",
    "this camera", "that sandwich",
)

#: Words that the data never uses (a real LM's softmax also spreads over irrelevant tokens).
UNUSED_WORDS = tuple(f"unused{i:03d}" for i in range(1000))


def response_window(config: DataConfig) -> int:
    """Response slots per sequence: the sentiment token plus the longest suffix."""
    return config.max_suffix_length + 1


def suffix_tokens(length: int) -> list[str]:
    """The shared suffix of ``length`` tokens: the first ``length-1`` suffix words closed by "."."""
    if not isinstance(length, (int, np.integer)) or not 0 <= length <= MAX_SUFFIX_LENGTH:
        raise ConfigError(f"suffix length {length!r} is invalid: must be an integer in "
                          f"0..{MAX_SUFFIX_LENGTH}")
    return [] if length == 0 else [*SUFFIX_WORDS[:length - 1], PERIOD]


def response_words(positive: bool, suffix_length: int) -> list[str]:
    return [POSITIVE if positive else NEGATIVE, *suffix_tokens(suffix_length)]


def parse_suffix_lengths(text: str, max_length: int = MAX_SUFFIX_LENGTH) -> list[int]:
    """Parse "0,2,6", "single,short,long" or a mix into suffix lengths; a bad item raises ConfigError."""
    lengths = []
    for item in (part.strip() for part in text.split(",")):
        if item in SHAPES:
            lengths.append(SHAPES[item])
            continue
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(f"suffix length {item!r} is neither an integer nor a shape "
                              f"({', '.join(SHAPES)})") from None
        if not 0 <= value <= max_length:
            raise ConfigError(f"suffix length {value} is out of range 0..{max_length}")
        lengths.append(value)
    if not lengths or "" in text.split(","):
        raise ConfigError(f"suffix lengths {text!r}: give a comma-separated list such as 0,2,6")
    return lengths


@dataclass(frozen=True)
class Statement:
    words: tuple[str, ...]
    positive: bool

    @property
    def prompt(self) -> list[str]:
        return [*self.words, ANSWER_CUE]


@dataclass(frozen=True)
class SentimentData:
    """Distinct statements split into train and eval (no statement in both), and the vocabulary."""

    train: tuple[Statement, ...]
    eval: tuple[Statement, ...]
    vocab: Vocab
    config: DataConfig


def _all_statements() -> list[Statement]:
    out = []
    for template in TEMPLATES:
        for subject in SUBJECTS:
            for positive, words in ((True, POSITIVE_WORDS), (False, NEGATIVE_WORDS)):
                for word in words:
                    text = template.format(s=subject, a=word)
                    out.append(Statement(tuple(text.split()), positive))
    return out


def build_vocab(n_unused_words: int) -> Vocab:
    words: dict[str, None] = {}
    for text in (*TEMPLATES, *SUBJECTS, *POSITIVE_WORDS, *NEGATIVE_WORDS):
        for w in text.split():
            if not w.startswith("{"):
                words[w] = None
    for w in (ANSWER_CUE, POSITIVE, NEGATIVE, *SUFFIX_WORDS, PERIOD):
        words[w] = None
    return Vocab([*words, *UNUSED_WORDS[:n_unused_words]])


def make_sentiment_data(config: DataConfig = DataConfig()) -> SentimentData:
    """Sample ``n_statements`` distinct statements (balanced by sentiment) and split them.

    Deterministic for ``config.seed``.
    """
    if config.n_unused_words > len(UNUSED_WORDS):
        raise ConfigError(f"DataConfig.n_unused_words={config.n_unused_words} is invalid: must be "
                          f"at most {len(UNUSED_WORDS)}")
    pool = _all_statements()
    if config.n_statements > len(pool):
        raise ConfigError(f"DataConfig.n_statements={config.n_statements} is invalid: only "
                          f"{len(pool)} distinct statements exist")
    rng = np.random.default_rng(config.seed)
    pos = [s for s in pool if s.positive]
    neg = [s for s in pool if not s.positive]
    n_pos = config.n_statements // 2
    chosen = ([pos[i] for i in rng.choice(len(pos), n_pos, replace=False)]
              + [neg[i] for i in rng.choice(len(neg), config.n_statements - n_pos, replace=False)])
    order = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in order]
    n_eval = max(1, int(round(config.eval_fraction * len(chosen))))
    return SentimentData(train=tuple(chosen[n_eval:]), eval=tuple(chosen[:n_eval]),
                         vocab=build_vocab(config.n_unused_words), config=config)
