"""Bring-your-own preference pairs: TRL-style JSONL / JSON / CSV files, a word-level vocabulary
built from them, fixed-shape ``Pairs`` and the token-level diff of chosen vs rejected.

Accepted records (the formats of TRL's preference trainers and the Hugging Face hub):

    {"prompt": "What is the capital of France?", "chosen": "Paris .", "rejected": "Rome ."}
    {"prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [...]}
    {"chosen": [{"role": "user", ...}, {"role": "assistant", ...}], "rejected": [...]}

A conversational response is the content of its last assistant turn; the turns before it are
context and are appended to the prompt (``role : content`` per turn), so they must agree between
chosen and rejected. Other fields (ids, scores) are ignored. Text is split into words and single
punctuation marks (``\\w+|[^\\w\\s]``), case kept.

Context rule: ``<bos> prompt response`` must fit the model's ``max_len``. A prompt that is too long
is truncated *from its start* (its last tokens are kept, they sit next to the response); a
response that does not fit beside ``<bos>`` is refused.

Token-level diff of two responses ``c`` (chosen) and ``r`` (rejected) as the model sees them (ids):

    prefix = longest common prefix,  suffix = longest common suffix of what remains,
    c = prefix · c_span · suffix,    r = prefix · r_span · suffix.

Every problem raises ``DataError`` with one line naming the file, the line and the problem.
"""

from __future__ import annotations

import collections
import csv
import difflib
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from entangle_jax.config import ConfigError, require
from entangle_jax.data.pairs import Pairs, Responses, encode_responses
from entangle_jax.data.vocab import SPECIAL_TOKENS, Vocab

FIELDS = ("prompt", "chosen", "rejected")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
_WORD = re.compile(r"\w+|[^\w\s]")


class DataError(ValueError):
    """A preference-data file or record cannot be used; the message names the file and line."""


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks of ``text``: ``"Paris, France."`` → Paris , France ."""
    return _WORD.findall(text)


@dataclass(frozen=True)
class PreferenceRecord:
    """One pair as words; ``where`` is ``file:line`` (or ``file:record N`` in a JSON array)."""

    prompt: tuple[str, ...]
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]
    where: str


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------

def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value),
                                                                       type(value).__name__)


def _turns(messages: list, field: str) -> list[tuple[str, str]]:
    turns = []
    for k, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DataError(f"'{field}' message {k} must be an object with string 'role' and "
                            f"'content'; got {json.dumps(message)[:60]}")
        turns.append((message["role"], message["content"]))
    return turns


def _split_conversation(messages: list, field: str) -> tuple[list[tuple[str, str]], str]:
    """(turns before the last assistant turn, that turn's content)."""
    turns = _turns(messages, field)
    last = max((k for k, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None:
        raise DataError(f"'{field}' has no assistant turn; the response is the last assistant "
                        "message")
    if last != len(turns) - 1:
        raise DataError(f"'{field}' continues after its last assistant turn (role "
                        f"{turns[-1][0]!r}); end the conversation with the response")
    return turns[:last], turns[last][1]


def _render(turns: Sequence[tuple[str, str]]) -> str:
    return " ".join(f"{role} : {content}" for role, content in turns)


def _parse(record) -> PreferenceRecord:
    if not isinstance(record, dict):
        raise DataError(f"expected an object with fields {', '.join(FIELDS)}; got "
                        f"{_type_name(record)}")
    conversational = isinstance(record.get("chosen"), list)
    required = ("chosen", "rejected") if conversational else FIELDS
    for field in required:
        if field not in record:
            keys = [str(k) for k in record]
            close = difflib.get_close_matches(field, [k for k in keys if k not in FIELDS], 1, 0.6)
            hint = f" (found {close[0]!r}: misspelled?)" if close else \
                f" (found {', '.join(map(repr, keys[:6])) or 'no fields'})"
            raise DataError(f"missing field {field!r}{hint}; a record needs {', '.join(required)}")
    contexts, responses = {}, {}
    for field in ("chosen", "rejected"):
        value = record[field]
        if isinstance(value, str):
            contexts[field], responses[field] = [], value
        elif isinstance(value, list):
            contexts[field], responses[field] = _split_conversation(value, field)
        else:
            raise DataError(f"field {field!r} must be a string or a list of {{role, content}} "
                            f"messages; got {_type_name(value)}")
    if contexts["chosen"] != contexts["rejected"]:
        raise DataError("chosen and rejected conversations differ before their last assistant "
                        "turn; they must share the prompt")
    prompt = record.get("prompt", "")
    if isinstance(prompt, list):
        prompt = _render(_turns(prompt, "prompt"))
    elif not isinstance(prompt, str):
        raise DataError(f"field 'prompt' must be a string or a list of {{role, content}} "
                        f"messages; got {_type_name(prompt)}")
    prompt = " ".join(filter(None, [prompt, _render(contexts["chosen"])]))
    words = {f: tuple(tokenize(responses[f])) for f in ("chosen", "rejected")}
    for field in ("chosen", "rejected"):
        if not words[field]:
            raise DataError(f"{field!r} is empty: the pair needs a chosen and a rejected response")
    if words["chosen"] == words["rejected"]:
        raise DataError("chosen and rejected are identical: the pair carries no preference")
    return PreferenceRecord(tuple(tokenize(prompt)), words["chosen"], words["rejected"], "")


def parse_record(record, where: str) -> PreferenceRecord:
    """Validate one decoded record (a dict) into a ``PreferenceRecord`` located at ``where``;
    a problem raises ``DataError("<where>: <problem>")``."""
    try:
        parsed = _parse(record)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return PreferenceRecord(parsed.prompt, parsed.chosen, parsed.rejected, where)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                        f"{err.start + 1}); save the file as UTF-8") from None


def _skip_or_raise(err: DataError, skip: bool, skipped: list[str]) -> None:
    """A bad record: noted in ``skipped`` with ``--skip-bad-lines``, else the error (with a hint)."""
    if not skip:
        raise DataError(f"{err}; pass --skip-bad-lines to skip such records") from None
    skipped.append(str(err))


def _jsonl_records(raw: bytes, name: str, skip: bool, skipped: list[str]):
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            text = _decode(line, where)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") \
                    from None
            yield parse_record(obj, where)
        except DataError as err:
            _skip_or_raise(err, skip, skipped)


def _json_records(raw: bytes, name: str, skip: bool, skipped: list[str]):
    text = _decode(raw, name)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{name}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})")\
            from None
    if not isinstance(records, list):
        raise DataError(f"{name}: a .json file must hold a list of records or one record per "
                        f"line; got {_type_name(records)}")
    for k, obj in enumerate(records):
        try:
            yield parse_record(obj, f"{name}:record {k}")
        except DataError as err:
            _skip_or_raise(err, skip, skipped)


def _csv_records(raw: bytes, name: str, skip: bool, skipped: list[str]):
    text = _decode(raw, name)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        raise DataError(f"{name}:1: unreadable CSV header ({err})") from None
    for field in FIELDS:
        if field not in header:
            close = difflib.get_close_matches(field, header, 1, 0.6)
            hint = f" (found {close[0]!r}: misspelled?)" if close else f" (header: {header[:6]})"
            raise DataError(f"{name}:1: missing column {field!r}{hint}; the header needs "
                            f"{', '.join(FIELDS)}")
    line = reader.line_num + 1
    while True:
        where = f"{name}:{line}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"{where}: unreadable CSV ({err})") from None
        line = reader.line_num + 1
        try:
            if None in row:
                raise DataError(f"{where}: more values than the header has columns")
            missing = [f for f in FIELDS if row[f] is None]
            if missing:
                raise DataError(f"{where}: no value for {', '.join(missing)}")
            yield parse_record({f: row[f] for f in FIELDS}, where)
        except DataError as err:
            _skip_or_raise(err, skip, skipped)


def read_records(path: str | Path, *, skip_bad_lines: bool = False
                 ) -> tuple[list[PreferenceRecord], list[str]]:
    """All records of a ``.jsonl``/``.ndjson``, ``.json`` (a list, or one record per line) or
    ``.csv`` file, and the messages of the records skipped (only with ``skip_bad_lines``)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown data format {path.suffix or '(no extension)'!r}; use "
                        f"{', '.join(FORMATS)}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as spreadsheets write
        raw = raw[3:]
    if not raw.strip():
        raise DataError(f"{path}: empty file: no preference pairs")
    if kind == "json" and not raw.lstrip().startswith(b"["):
        kind = "jsonl"  # the Hugging Face `to_json` default: one record per line
    reader = {"jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records}[kind]
    skipped: list[str] = []
    records = list(reader(raw, str(path), skip_bad_lines, skipped))
    if not records:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise DataError(f"{path}: no usable preference pairs; {len(skipped)} skipped{first}")
    return records, skipped


# ------------------------------------------------------------------------------------------------
# Vocabulary, diff, encoding
# ------------------------------------------------------------------------------------------------

def build_vocab(records: Sequence[PreferenceRecord], max_size: int) -> Vocab:
    """The ``max_size - 3`` most frequent words (ties broken alphabetically) after ``<pad>``,
    ``<bos>``, ``<unk>``; every other word becomes ``<unk>``."""
    if not isinstance(max_size, int) or isinstance(max_size, bool) or \
            max_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size={max_size!r} is invalid: must be an integer > "
                          f"{len(SPECIAL_TOKENS)} (the special tokens {', '.join(SPECIAL_TOKENS)})")
    counts = collections.Counter(w for r in records for part in (r.prompt, r.chosen, r.rejected)
                                 for w in part)
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


@dataclass(frozen=True)
class UserDataConfig:
    """A preference-data file: its path, content hash (``sha256``), the vocabulary cap and whether
    bad records were skipped. Recorded in checkpoints and reports."""

    path: str
    sha256: str
    vocab_size: int = 4096
    skip_bad_lines: bool = False

    def __post_init__(self):
        if not isinstance(self.vocab_size, int) or isinstance(self.vocab_size, bool) or \
                self.vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"UserDataConfig.vocab_size={self.vocab_size!r} is invalid: must "
                              f"be an integer > {len(SPECIAL_TOKENS)}")
        require(self, "skip_bad_lines", isinstance(self.skip_bad_lines, bool),
                "must be true or false")


@dataclass(frozen=True)
class PreferenceData:
    """Validated records of a file, their vocabulary and the messages of skipped records."""

    records: tuple[PreferenceRecord, ...]
    vocab: Vocab
    config: UserDataConfig
    skipped: tuple[str, ...] = ()

    @property
    def window(self) -> int:
        """Response slots per sequence: the longest chosen or rejected response."""
        return max(max(len(r.chosen), len(r.rejected)) for r in self.records)

    def diffs(self) -> list[TokenDiff]:
        """The token-level diff of every record, on the ids the model sees."""
        return [token_diff(self.vocab.encode(r.chosen), self.vocab.encode(r.rejected))
                for r in self.records]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_user_data(path: str | Path, *, vocab_size: int = UserDataConfig.vocab_size,
                   skip_bad_lines: bool = False) -> PreferenceData:
    """Read, validate and index a preference file (see the module docstring for the formats)."""
    config = UserDataConfig(str(path), "", vocab_size, skip_bad_lines)  # validates vocab_size
    records, skipped = read_records(path, skip_bad_lines=skip_bad_lines)
    vocab = build_vocab(records, vocab_size)
    usable = []
    for r in records:
        if vocab.encode(r.chosen) != vocab.encode(r.rejected):
            usable.append(r)
            continue
        message = (f"{r.where}: chosen and rejected differ only in words outside the "
                   f"{vocab_size}-word vocabulary (both become <unk>): the pair carries no "
                   "preference for the model; raise --vocab-size")
        if not skip_bad_lines:
            raise DataError(message)
        skipped.append(message)
    if not usable:
        raise DataError(f"{path}: no usable preference pairs; {len(skipped)} skipped "
                        f"(first: {skipped[0]})")
    config = UserDataConfig(str(path), file_sha256(path), vocab_size, skip_bad_lines)
    return PreferenceData(tuple(usable), vocab, config, tuple(skipped))


def load_from_config(config: UserDataConfig) -> PreferenceData:
    """Reload the file a checkpoint or report recorded; refuse it if its content changed."""
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"{path}: the data file recorded in the checkpoint is missing")
    if file_sha256(path) != config.sha256:
        raise DataError(f"{path}: the file changed since the checkpoint was trained on it "
                        f"(sha256 {file_sha256(path)[:12]}… ≠ recorded {config.sha256[:12]}…)")
    return load_user_data(path, vocab_size=config.vocab_size,
                          skip_bad_lines=config.skip_bad_lines)


def fit_prompt(prompt: Sequence[str], response_length: int, seq_len: int, where: str = ""
               ) -> tuple[tuple[str, ...], int]:
    """The prompt cut to fit ``seq_len`` beside ``<bos>`` and a response of ``response_length``
    tokens, keeping its last tokens, and the number of tokens dropped. A response that does not
    fit beside ``<bos>`` is refused (``DataError``)."""
    room = seq_len - 1 - response_length
    if room < 0:
        raise DataError(f"{where}: a response of {response_length} tokens does not fit the "
                        f"model's context of {seq_len} tokens (one is <bos>); raise --max-len")
    dropped = max(0, len(prompt) - room)
    return tuple(prompt[dropped:]), dropped


def _fit(record: PreferenceRecord, seq_len: int) -> tuple[tuple[str, ...], int]:
    """Chosen and rejected share one prompt cut, made for the longer of the two."""
    return fit_prompt(record.prompt, max(len(record.chosen), len(record.rejected)), seq_len,
                      record.where)


def user_pairs(data: PreferenceData, indices: Sequence[int], seq_len: int
               ) -> tuple[Pairs, np.ndarray]:
    """``Pairs`` of the records at ``indices`` (window = ``data.window``) and the number of
    prompt tokens each lost to the context rule."""
    prompts, dropped = zip(*(_fit(data.records[i], seq_len) for i in indices))
    chosen = [data.records[i].chosen for i in indices]
    rejected = [data.records[i].rejected for i in indices]
    window = data.window
    return (Pairs(encode_responses(data.vocab, prompts, chosen, seq_len, window),
                  encode_responses(data.vocab, prompts, rejected, seq_len, window)),
            np.asarray(dropped, np.int32))


def check_context(data: PreferenceData, seq_len: int) -> int:
    """Refuse any record whose responses cannot fit ``seq_len``; the number of prompts that the
    context rule will truncate."""
    return sum(_fit(r, seq_len)[1] > 0 for r in data.records)


def sft_batch(data: PreferenceData, label_flip: float, batch_size: int, seq_len: int,
              rng: np.random.Generator) -> Responses:
    """Prompt + chosen of ``batch_size`` records drawn with replacement; with probability
    ``label_flip`` a record contributes its rejected response instead."""
    idx = rng.integers(0, len(data.records), batch_size)
    flips = rng.random(batch_size) < label_flip
    prompts, responses = [], []
    for i, flip in zip(idx, flips):
        record = data.records[i]
        prompts.append(_fit(record, seq_len)[0])
        responses.append(record.rejected if flip else record.chosen)
    return encode_responses(data.vocab, prompts, responses, seq_len, data.window)


def pretrain_batch(data: PreferenceData, batch_size: int, seq_len: int,
                   rng: np.random.Generator) -> Responses:
    """Prompts followed by 1..window random vocabulary words (varied continuations)."""
    words = [w for w in data.vocab.words if w not in SPECIAL_TOKENS]
    prompts, responses = [], []
    for i in rng.integers(0, len(data.records), batch_size):
        response = [words[j] for j in rng.integers(0, len(words), rng.integers(1, data.window + 1))]
        prompts.append(fit_prompt(data.records[i].prompt, len(response), seq_len)[0])
        responses.append(response)
    return encode_responses(data.vocab, prompts, responses, seq_len, data.window)
