"""Bring-your-own preference pairs: a file's records (``data.records``), a word vocabulary built
from them for the tiny models, the token-level diff of chosen vs rejected, and fixed-shape ``Pairs``
for any model's tokenizer, under stated token budgets.

Encoding (``encode_pairs``), for a word ``Vocab`` or a pretrained model's ``ChatTokenizer``:

    word Vocab:      <bos> words(prompt)            words(response)
    ChatTokenizer:   chat template of the turns     text of the response   (conversational record)
                     text of the prompt             text of the response   (plain record)

Token budgets and truncation rules, counted in the report and never silent:

- a response longer than ``max_response_tokens`` keeps its first tokens;
- a prompt longer than ``max_prompt_tokens``, or than the model's context leaves beside the longer
  response, keeps its last tokens (they sit next to the response; a chat prompt loses its system
  turn first);
- a pair whose two responses are the same tokens after this (or after rare words became ``<unk>``)
  carries no preference and is skipped; a response that cannot fit the context is refused.

Token-level diff of two responses ``c`` (chosen) and ``r`` (rejected) as the model sees them (ids):

    prefix = longest common prefix,  suffix = longest common suffix of what remains,
    c = prefix · c_span · suffix,    r = prefix · r_span · suffix.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from entangle_jax.config import ConfigError, require
from entangle_jax.data.bpe import ChatTokenizer
from entangle_jax.data.pairs import (Pairs, Responses, encode_responses,
                                     pack_responses, padded_length)
from entangle_jax.data.records import DataError, PreferenceRecord, read_records, tokenize
from entangle_jax.data.vocab import SPECIAL_TOKENS, Vocab

def build_vocab(records: Sequence[PreferenceRecord], max_size: int) -> Vocab:
    """The ``max_size - 3`` most frequent words (ties broken alphabetically) after ``<pad>``,
    ``<bos>``, ``<unk>``; every other word becomes ``<unk>``."""
    if not isinstance(max_size, int) or isinstance(max_size, bool) or \
            max_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size={max_size!r} is invalid: must be an integer > "
                          f"{len(SPECIAL_TOKENS)} (the special tokens {', '.join(SPECIAL_TOKENS)})")
    counts = collections.Counter(w for r in records for part in r.words() for w in part)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return Vocab(ranked[:max_size - len(SPECIAL_TOKENS)])


@dataclass(frozen=True)
class TokenDiff:
    """``chosen = prefix · chosen_span · suffix`` and ``rejected = prefix · rejected_span · suffix``
    (lengths in tokens)."""

    prefix: int
    chosen_span: int
    rejected_span: int
    suffix: int

    @property
    def chosen_length(self) -> int:
        return self.prefix + self.chosen_span + self.suffix

    @property
    def rejected_length(self) -> int:
        return self.prefix + self.rejected_span + self.suffix

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "chosen_span": self.chosen_span,
                "rejected_span": self.rejected_span, "suffix": self.suffix}


def token_diff(chosen: Sequence, rejected: Sequence) -> TokenDiff:
    """Longest common prefix, then longest common suffix of the remainders (they never overlap)."""
    limit = min(len(chosen), len(rejected))
    prefix = 0
    while prefix < limit and chosen[prefix] == rejected[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and chosen[-1 - suffix] == rejected[-1 - suffix]:
        suffix += 1
    return TokenDiff(prefix, len(chosen) - prefix - suffix, len(rejected) - prefix - suffix, suffix)


def _optional_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(obj, name, value is None or (isinstance(value, int) and not isinstance(value, bool)
                                              and value > 0), "must be a positive integer or None")


@dataclass(frozen=True)
class UserDataConfig:
    """A preference-data file: its path, content hash (``sha256``), the word-vocabulary cap of the
    tiny models, whether bad records were skipped, and the token budgets of the encoding (None: no
    budget beyond the model's context). Recorded in checkpoints and reports."""

    path: str
    sha256: str
    vocab_size: int = 4096
    skip_bad_lines: bool = False
    max_prompt_tokens: int | None = None
    max_response_tokens: int | None = None

    def __post_init__(self):
        if not isinstance(self.vocab_size, int) or isinstance(self.vocab_size, bool) or \
                self.vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"UserDataConfig.vocab_size={self.vocab_size!r} is invalid: must "
                              f"be an integer > {len(SPECIAL_TOKENS)}")
        require(self, "skip_bad_lines", isinstance(self.skip_bad_lines, bool),
                "must be true or false")
        _optional_positive(self, "max_prompt_tokens", "max_response_tokens")


@dataclass(frozen=True)
class PreferenceData:
    """Validated records of a file, their word vocabulary and the messages of skipped records."""

    records: tuple[PreferenceRecord, ...]
    vocab: Vocab
    config: UserDataConfig
    skipped: tuple[str, ...] = ()

    def budgeted_words(self, i: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """``(prompt, chosen, rejected)`` words of record ``i``, its responses cut to
        ``max_response_tokens`` (the word models' view under the budgets; the prompt is cut by
        ``fit_prompt``)."""
        prompt, chosen, rejected = self.records[i].words()
        budget = self.config.max_response_tokens
        return prompt, chosen[:budget], rejected[:budget]

    @cached_property
    def window(self) -> int:
        """Word-level response slots per sequence: the longest chosen or rejected response
        within the response budget (computed once: every SFT batch asks for it)."""
        return max(max(len(w[1]), len(w[2]))
                   for w in map(self.budgeted_words, range(len(self.records))))


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_user_data(path: str | Path, *, vocab_size: int = UserDataConfig.vocab_size,
                   skip_bad_lines: bool = False, max_prompt_tokens: int | None = None,
                   max_response_tokens: int | None = None) -> PreferenceData:
    """Read and validate a preference file (formats: ``data.records``) and index its words."""
    UserDataConfig(str(path), "", vocab_size, skip_bad_lines, max_prompt_tokens,
                   max_response_tokens)  # validates the options before reading
    records, skipped = read_records(path, skip_bad_lines=skip_bad_lines)
    config = UserDataConfig(str(path), file_sha256(path), vocab_size, skip_bad_lines,
                            max_prompt_tokens, max_response_tokens)
    return PreferenceData(tuple(records), build_vocab(records, vocab_size), config,
                          tuple(skipped))


def load_from_config(config: UserDataConfig) -> PreferenceData:
    """Reload the file a checkpoint or report recorded; refuse it if its content changed."""
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"{path}: the data file recorded in the checkpoint is missing")
    if file_sha256(path) != config.sha256:
        raise DataError(f"{path}: the file changed since the checkpoint was trained on it "
                        f"(sha256 {file_sha256(path)[:12]}… ≠ recorded {config.sha256[:12]}…)")
    return load_user_data(path, vocab_size=config.vocab_size,
                          skip_bad_lines=config.skip_bad_lines,
                          max_prompt_tokens=config.max_prompt_tokens,
                          max_response_tokens=config.max_response_tokens)


# ------------------------------------------------------------------------------------------------
# Encoding for a model's tokenizer
# ------------------------------------------------------------------------------------------------

def prompt_parts(tokenizer: Vocab | ChatTokenizer, record: PreferenceRecord
                 ) -> tuple[list[int], list[int]]:
    """``(lead, body)``: the prompt as the model reads it, before any truncation. ``lead`` is
    never cut (a word model's ``<bos>``); ``body`` may lose its first tokens."""
    if isinstance(tokenizer, Vocab):
        return [tokenizer.bos_id], tokenizer.encode(record.words()[0])
    if record.conversational:
        return [], tokenizer.encode_chat(record.turns)
    return [], tokenizer.encode(record.prompt)


def response_ids(tokenizer: Vocab | ChatTokenizer, text: str) -> list[int]:
    if isinstance(tokenizer, Vocab):
        return tokenizer.encode(tokenize(text))
    return tokenizer.encode(text)


def fit_prompt(prompt: Sequence, response_length: int, seq_len: int, where: str = "", *,
               reserved: int = 1, budget: int | None = None) -> tuple[tuple, int]:
    """The prompt cut to its last tokens so that ``reserved`` leading tokens (a ``<bos>``), the
    prompt and a response of ``response_length`` tokens fit ``seq_len`` (and the prompt with its
    reserved tokens fits ``budget``, if given); also the number of tokens dropped. A response
    that leaves no token before it is refused (``DataError``)."""
    room = seq_len - reserved - response_length
    if room < 0 or reserved + room < 1:
        raise DataError(f"{where}: a response of {response_length} tokens does not fit the "
                        f"model's context of {seq_len} tokens"
                        + (" (one is <bos>); raise --max-len" if reserved else
                           "; set --max-response-tokens"))
    if budget is not None:
        room = min(room, max(budget - reserved, 0 if reserved else 1))
    dropped = max(0, len(prompt) - room)
    return tuple(prompt[dropped:]), dropped


@dataclass(frozen=True)
class EncodedPairs:
    """Records encoded as ``Pairs``: ``indices[k]`` is the record of pair ``k``; per pair, the
    prompt tokens dropped and whether a response was cut; ``skipped`` names the records left
    out (no preference left after encoding)."""

    pairs: Pairs
    indices: tuple[int, ...]
    prompt_dropped: np.ndarray
    response_cut: np.ndarray
    skipped: tuple[str, ...]

    def summary(self, total: int) -> dict:
        """The counts a report states: pairs kept of ``total`` records asked for, truncations."""
        return {"records": total, "pairs": len(self.indices), "skipped": len(self.skipped),
                "prompts_truncated": int(np.sum(self.prompt_dropped > 0)),
                "responses_truncated": int(np.sum(self.response_cut)),
                "seq_len": int(self.pairs.chosen.tokens.shape[-1]),
                "window": int(self.pairs.chosen.window)}


def _pack_pairs(prompts: list, chosen: list, rejected: list, seq_len: int, window: int,
                pad_id: int) -> Pairs:
    return Pairs(pack_responses(prompts, chosen, seq_len, window, pad_id),
                 pack_responses(prompts, rejected, seq_len, window, pad_id))


def _no_preference(data: PreferenceData, tokenizer, record: PreferenceRecord, cut: bool) -> str:
    """Why a pair whose texts differ reads the same to the model."""
    if cut:
        return (f"chosen and rejected differ only after their first "
                f"{data.config.max_response_tokens} tokens (--max-response-tokens): the pair "
                "carries no preference within the budget")
    if isinstance(tokenizer, Vocab) and record.words()[1] != record.words()[2]:
        return (f"chosen and rejected differ only in words outside the {len(tokenizer)}-word "
                "vocabulary (both become <unk>): the pair carries no preference for the model; "
                "raise --vocab-size")
    return ("chosen and rejected differ only in spacing, which the model's tokens do not "
            "keep: the pair carries no preference for the model")


def encode_pairs(data: PreferenceData, tokenizer: Vocab | ChatTokenizer,
                 indices: Sequence[int], max_len: int) -> EncodedPairs:
    """``Pairs`` of the records at ``indices`` for ``tokenizer`` under the data's token budgets
    and a model context of ``max_len`` tokens (rules in the module docstring). A pair left
    without preference is skipped when the data was read with ``skip_bad_lines``, else refused.
    Word models keep their fixed context as the sequence length; pretrained models pad to the
    longest pair, rounded up to ``SEQ_LEN_MULTIPLE``."""
    budget_w = data.config.max_response_tokens
    rows = []
    for i in indices:
        record = data.records[i]
        ids = [response_ids(tokenizer, text) for text in (record.chosen, record.rejected)]
        cut = any(budget_w is not None and len(r) > budget_w for r in ids)
        ids = [r[:budget_w] if budget_w is not None else r for r in ids]
        lead, body = prompt_parts(tokenizer, record)
        body, dropped = fit_prompt(body, max(map(len, ids)), max_len, record.where,
                                   reserved=len(lead), budget=data.config.max_prompt_tokens)
        rows.append((i, [*lead, *body], dropped, cut, *ids))
    kept, skipped = [], []
    for row in rows:
        i, _, _, cut, chosen, rejected = row
        if chosen == rejected:
            skipped.append(f"{data.records[i].where}: "
                           f"{_no_preference(data, tokenizer, data.records[i], cut)}")
            if not data.config.skip_bad_lines:
                raise DataError(f"{skipped[-1]}; pass --skip-bad-lines to skip such pairs")
        else:
            kept.append(row)
    if not kept:
        raise DataError(f"{data.config.path}: no pair carries a preference after encoding "
                        f"({len(skipped)} skipped; first: {skipped[0]})")
    window = max(max(len(r[4]), len(r[5])) for r in kept)
    longest = max(len(r[1]) + max(len(r[4]), len(r[5])) for r in kept)
    seq_len = max_len if isinstance(tokenizer, Vocab) else min(
        max_len, padded_length(longest))
    pairs = _pack_pairs([r[1] for r in kept], [r[4] for r in kept], [r[5] for r in kept],
                        seq_len, window, tokenizer.pad_id)
    return EncodedPairs(pairs, tuple(r[0] for r in kept), np.asarray([r[2] for r in kept]),
                        np.asarray([r[3] for r in kept], bool), tuple(skipped))


def encode_probes(data: PreferenceData, tokenizer: Vocab | ChatTokenizer,
                  encoded: EncodedPairs, max_len: int) -> dict[str, "ProbeSet"]:
    """The probe responses of the encoded pairs' records, one ``ProbeSet`` per field: each
    response on the same (truncated) prompt as its pair, cut to the response budget and to the
    context."""
    budget_w = data.config.max_response_tokens
    prompts = [encoded.pairs.chosen.prompt_ids(k) for k in range(len(encoded.indices))]
    fields = sorted({name for i in encoded.indices for name, _ in data.records[i].probes})
    out = {}
    for name in fields:
        rows, responses = [], []
        for k, i in enumerate(encoded.indices):
            text = dict(data.records[i].probes).get(name)
            if text is None:
                continue
            ids = response_ids(tokenizer, text)
            rows.append(k)
            responses.append(ids[:budget_w] if budget_w is not None else ids)
        responses = [r[:max_len - len(prompts[k])] for k, r in zip(rows, responses)]
        window = max(map(len, responses))
        longest = max(len(prompts[k]) + len(r) for k, r in zip(rows, responses))
        seq_len = max_len if isinstance(tokenizer, Vocab) else min(
            max_len, padded_length(longest))
        out[name] = ProbeSet(rows, pack_responses([prompts[k] for k in rows], responses,
                                                  seq_len, window, tokenizer.pad_id))
    return out


@dataclass(frozen=True)
class ProbeSet:
    """Probe responses of one field: ``responses[j]`` answers the prompt of pair row
    ``rows[j]``."""

    rows: list[int]
    responses: Responses


def pair_diffs(pairs: Pairs) -> list[TokenDiff]:
    """The token-level diff of every pair's two responses, on the ids the model sees."""
    out = []
    for k in range(len(pairs)):
        chosen, rejected = pairs.chosen.response_ids(k), pairs.rejected.response_ids(k)
        out.append(token_diff(chosen, rejected))
    return out


def _word_batch(data: PreferenceData, prompts: list, responses: list, seq_len: int) -> Responses:
    return encode_responses(data.vocab, prompts, responses, seq_len, data.window)


def _fit_word_prompt(data: PreferenceData, i: int, prompt, response_length: int,
                     seq_len: int) -> tuple:
    """Record ``i``'s prompt cut as ``encode_pairs`` cuts it (``<bos>`` reserved, the prompt
    budget applied)."""
    return fit_prompt(prompt, response_length, seq_len, data.records[i].where,
                      budget=data.config.max_prompt_tokens)[0]


def sft_batch(data: PreferenceData, label_flip: float, batch_size: int, seq_len: int,
              rng: np.random.Generator) -> Responses:
    """Prompt + chosen of ``batch_size`` records drawn with replacement (word models); with
    probability ``label_flip`` a record contributes its rejected response instead."""
    idx = rng.integers(0, len(data.records), batch_size)
    flips = rng.random(batch_size) < label_flip
    prompts, responses = [], []
    for i, flip in zip(idx, flips):
        prompt, chosen, rejected = data.budgeted_words(i)
        prompts.append(_fit_word_prompt(data, i, prompt, max(len(chosen), len(rejected)),
                                        seq_len))
        responses.append(rejected if flip else chosen)
    return _word_batch(data, prompts, responses, seq_len)


def pretrain_batch(data: PreferenceData, batch_size: int, seq_len: int,
                   rng: np.random.Generator) -> Responses:
    """Prompts followed by 1..window random vocabulary words (varied continuations)."""
    words = [w for w in data.vocab.words if w not in SPECIAL_TOKENS]
    prompts, responses = [], []
    for i in rng.integers(0, len(data.records), batch_size):
        response = [words[j] for j in rng.integers(0, len(words), rng.integers(1, data.window + 1))]
        prompts.append(_fit_word_prompt(data, i, data.records[i].words()[0], len(response),
                                        seq_len))
        responses.append(response)
    return _word_batch(data, prompts, responses, seq_len)


__all__ = ["DataError", "EncodedPairs", "PreferenceData", "ProbeSet", "TokenDiff",
           "UserDataConfig", "build_vocab", "encode_pairs", "encode_probes",
           "fit_prompt", "load_from_config", "load_user_data", "pair_diffs", "prompt_parts",
           "response_ids", "token_diff"]
