"""Fixed-shape, padded token batches for responses and preference pairs.

A sequence is ``<bos> prompt response <pad>…`` of fixed length ``T``; ``start`` is the index of its first
response token and ``length`` its number of response tokens. Right padding keeps causal attention exact
without a padding mask (no real token attends to a later pad), and a fixed ``T`` and response ``window``
let one compiled function serve every suffix length.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from entangle_jax.config import ConfigError
from entangle_jax.data.sentiment import Statement, response_words
from entangle_jax.data.vocab import Vocab


#: Sequence lengths of a pretrained model's batches are rounded up to a multiple of this, so that
#: data of similar lengths share one compiled shape.
SEQ_LEN_MULTIPLE = 16


def padded_length(n: int, multiple: int = SEQ_LEN_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


@struct.dataclass
class Responses:
    """A batch of prompt + response sequences (leading axes are batch axes)."""

    tokens: jnp.ndarray  # [..., T] int32
    start: jnp.ndarray  # [...] int32, index of the first response token
    length: jnp.ndarray  # [...] int32, number of response tokens
    window: int = struct.field(pytree_node=False)  # static: the most response tokens of any row

    @property
    def response_mask(self) -> jnp.ndarray:
        """[..., window] bool: which of the ``window`` response slots hold a real token."""
        return jnp.arange(self.window) < self.length[..., None]

    def __getitem__(self, index) -> "Responses":
        return Responses(self.tokens[index], self.start[index], self.length[index], self.window)

    def prompt_ids(self, row: int) -> list[int]:
        """The ids before the response of one row of a batch (host values)."""
        return np.asarray(self.tokens[row])[:int(self.start[row])].tolist()

    def response_ids(self, row: int) -> list[int]:
        """The response ids of one row of a batch (host values)."""
        start = int(self.start[row])
        return np.asarray(self.tokens[row])[start:start + int(self.length[row])].tolist()

    def widths(self) -> np.ndarray:
        """``[...]`` tokens each row holds before its padding: prompt and response (host)."""
        return np.asarray(self.start) + np.asarray(self.length)

    def cut(self, width: int) -> "Responses":
        """The batch with its sequences cut to ``width`` tokens, which must hold every row's
        prompt and response: only padding goes, so no log-prob changes (right padding is never
        attended to)."""
        if not self.widths().max(initial=0) <= width <= self.tokens.shape[-1]:
            raise ValueError(f"cannot cut sequences of {self.tokens.shape[-1]} tokens holding up "
                             f"to {self.widths().max(initial=0)} to {width}")
        return Responses(self.tokens[..., :width], self.start, self.length, self.window)


@struct.dataclass
class Pairs:
    """Preference pairs: ``chosen`` (y_w) and ``rejected`` (y_l) share their prompts row by row."""

    chosen: Responses
    rejected: Responses

    def __len__(self) -> int:
        return int(self.chosen.tokens.shape[0])

    def __getitem__(self, index) -> "Pairs":
        return Pairs(self.chosen[index], self.rejected[index])

    def widths(self) -> np.ndarray:
        """``[B]`` tokens of each pair's longer sequence (prompt and response, host)."""
        return np.maximum(self.chosen.widths(), self.rejected.widths())

    def cut(self, width: int) -> "Pairs":
        """Both sides cut to ``width`` tokens (``Responses.cut``)."""
        return Pairs(self.chosen.cut(width), self.rejected.cut(width))

    def by_length(self) -> np.ndarray:
        """The order of the pairs by ``widths``, shortest first (stable)."""
        return np.argsort(self.widths(), kind="stable")

    def cut_padding(self, multiple: int) -> "Pairs":
        """Cut to the longest sequence rounded up to a multiple of ``multiple`` tokens (at most
        the padded length)."""
        return self.cut(min(self.chosen.tokens.shape[-1],
                            padded_length(int(self.widths().max()), multiple)))


def stack_responses(batches: Sequence[Responses]) -> tuple[Responses, np.ndarray]:
    """``(stacked, ends)``: the batches as one on the host, right-padded to the longest sequence
    and the widest response window (right padding changes no log-prob: no real token attends to
    a later one), and the row where each batch ends (``np.split(values, ends[:-1])`` splits
    per-row results back). One batch means one compiled shape for all of them."""
    batches = [jax.device_get(b) for b in batches]
    if not batches:
        raise ValueError("stack_responses needs at least one batch")
    t = max(b.tokens.shape[-1] for b in batches)
    window = max(b.window for b in batches)

    def padded(tokens: np.ndarray) -> np.ndarray:
        fill = np.full((tokens.shape[0], t - tokens.shape[1]), 0, tokens.dtype)
        return np.concatenate([tokens, fill], 1)

    stacked = Responses(np.concatenate([padded(np.asarray(b.tokens)) for b in batches]),
                        np.concatenate([np.asarray(b.start) for b in batches]),
                        np.concatenate([np.asarray(b.length) for b in batches]), window)
    return stacked, np.cumsum([b.tokens.shape[0] for b in batches])


def pack_responses(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                   seq_len: int, window: int, pad_id: int) -> Responses:
    """A padded ``Responses`` batch of ``prompt + response`` id sequences of length ``seq_len``
    (each response 1..``window`` ids; the caller has fitted the prompts)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    tokens = np.full((len(prompts), seq_len), pad_id, np.int32)
    start = np.zeros(len(prompts), np.int32)
    length = np.zeros(len(prompts), np.int32)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        if not response or len(response) > window:
            raise ConfigError(f"a response has {len(response)} tokens; allowed 1..{window}")
        if not prompt:
            raise ConfigError("a sequence needs at least one token before its response")
        if len(prompt) + len(response) > seq_len:
            raise ConfigError(f"sequence of {len(prompt) + len(response)} tokens does not fit "
                              f"the length {seq_len}")
        tokens[row, :len(prompt) + len(response)] = [*prompt, *response]
        start[row], length[row] = len(prompt), len(response)
    return Responses(jnp.asarray(tokens), jnp.asarray(start), jnp.asarray(length), window)


def encode_responses(vocab: Vocab, prompts: Sequence[Sequence[str]],
                     responses: Sequence[Sequence[str]], seq_len: int, window: int) -> Responses:
    """Encode prompt/response word lists into a padded ``Responses`` batch of length ``seq_len``
    (``<bos>`` first)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    for prompt, response in zip(prompts, responses):
        if not response or len(response) > window:
            raise ConfigError(f"response {' '.join(response)!r} has {len(response)} tokens; "
                              f"allowed 1..{window}")
        if 1 + len(prompt) + len(response) > seq_len:
            raise ConfigError(f"sequence of {1 + len(prompt) + len(response)} tokens does not "
                              f"fit the model's context of {seq_len} (prompt {' '.join(prompt)!r})")
    return pack_responses([[vocab.bos_id, *vocab.encode(p)] for p in prompts],
                          [vocab.encode(r) for r in responses], seq_len, window, vocab.pad_id)


def sentiment_pairs(statements: Sequence[Statement], vocab: Vocab, suffix_length: int,
                    seq_len: int, window: int) -> Pairs:
    """Chosen = true sentiment + suffix of ``suffix_length``; rejected = false sentiment + same suffix."""
    prompts = [s.prompt for s in statements]
    chosen = [response_words(s.positive, suffix_length) for s in statements]
    rejected = [response_words(not s.positive, suffix_length) for s in statements]
    return Pairs(encode_responses(vocab, prompts, chosen, seq_len, window),
                 encode_responses(vocab, prompts, rejected, seq_len, window))
