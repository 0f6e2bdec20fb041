"""Reading preference files: TRL's formats, HH-RLHF dialogues, probe responses and extra fields.

Accepted records (``.jsonl``/``.ndjson``, ``.json``, ``.csv``, each also gzipped as ``….gz``):

    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Rome."}
    {"prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [...]}
    {"chosen": [{"role": "user", ...}, {"role": "assistant", ...}], "rejected": [...]}
    {"chosen": "\\n\\nHuman: ... \\n\\nAssistant: ...", "rejected": "\\n\\nHuman: ... \\n\\nAssistant: ..."}
    {"prompt": "\\n\\nHuman: ... \\n\\nAssistant:", "chosen": " ...", "rejected": " ..."}

The first is *plain*: a text prompt (possibly empty) and two text responses. The others are
*conversational*: the prompt is a list of turns ``(role, content)``, and a model with a chat
template formats it with that template. A conversational response is the content of the last
assistant turn; the turns before it are the prompt and must agree between chosen and rejected.
HH-RLHF dialogues (``\\n\\nHuman:`` / ``\\n\\nAssistant:`` markers, in a whole transcript or in
``prompt``) become user and assistant turns; their responses lose surrounding whitespace.

Other fields are kept: string fields named in ``PROBE_KINDS`` are *probe responses* to the same
prompt (the learning-dynamics files of Ren & Sutherland: rephrasings of chosen and rejected,
irrelevant and non-language responses), any other scalar field is passed through to reports
(``fields``), for grouping. Every problem raises ``DataError`` with one line naming the file, the
line and the problem; ``skip_bad_lines`` skips such records and lists them instead.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("prompt", "chosen", "rejected")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}

#: Probe response fields → the kind of response (Ren & Sutherland's learning-dynamics probe sets).
PROBE_KINDS = {
    "chosen_initial": "chosen rephrased", "chosen_selfr": "chosen rephrased",
    "chosen_gptsemantic": "chosen rephrased", "chosen_gptformat": "chosen rephrased",
    "reject_gptsemantic": "rejected rephrased", "reject_gptformat": "rejected rephrased",
    "irr_train": "irrelevant", "irr_test": "irrelevant", "irr_hum": "irrelevant",
    "random_permute": "non-language", "random_nonhum": "non-language",
}

_WORD = re.compile(r"\w+|[^\w\s]")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Turn = tuple[str, str]


class DataError(ValueError):
    """A preference-data file or record cannot be used; the message names the file and line."""


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks of ``text``: ``"Paris, France."`` → Paris , France ."""
    return _WORD.findall(text)


def render(turns: Sequence[Turn]) -> str:
    """Turns as one line of text, ``role : content`` each (the word-level models' prompt)."""
    return " ".join(f"{role} : {content}" for role, content in turns)


@dataclass(frozen=True)
class PreferenceRecord:
    """One pair as the file states it. ``turns`` is the conversation before the response (empty
    for a plain record, whose prompt is ``prompt``); ``where`` is ``file:line`` (or
    ``file:record N`` in a JSON array); ``probes`` and ``fields`` hold the other fields."""

    prompt: str
    turns: tuple[Turn, ...]
    chosen: str
    rejected: str
    where: str = ""
    probes: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str | int | float | bool | None], ...] = ()

    @property
    def conversational(self) -> bool:
        return bool(self.turns)

    @property
    def prompt_text(self) -> str:
        """The prompt as one text: the plain prompt, or the rendered turns."""
        return render(self.turns) if self.turns else self.prompt

    def words(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """``(prompt, chosen, rejected)`` as words (``tokenize``), the word-level models' view."""
        return (tuple(tokenize(self.prompt_text)), tuple(tokenize(self.chosen)),
                tuple(tokenize(self.rejected)))


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value),
                                                                       type(value).__name__)


def _messages(messages: list, field: str) -> list[Turn]:
    turns = []
    for k, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DataError(f"'{field}' message {k} must be an object with string 'role' and "
                            f"'content'; got {json.dumps(message)[:60]}")
        turns.append((message["role"], message["content"]))
    return turns


def is_dialogue(text: str) -> bool:
    """Whether ``text`` is an HH-RLHF transcript (it opens with a ``\\n\\nHuman:`` turn)."""
    return text.startswith("\n\nHuman:")


def dialogue_turns(text: str) -> list[Turn]:
    """The turns of an HH-RLHF transcript; a trailing empty ``Assistant:`` turn (a prompt) is
    dropped."""
    parts = _HH_TURN.split(text)
    turns = [(_HH_ROLES[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2])]
    if turns and turns[-1] == ("assistant", ""):
        turns.pop()
    return turns


def _split_conversation(turns: list[Turn], field: str) -> tuple[list[Turn], str]:
    """(turns before the last assistant turn, that turn's content)."""
    last = max((k for k, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None:
        raise DataError(f"'{field}' has no assistant turn; the response is the last assistant "
                        "message")
    if last != len(turns) - 1:
        raise DataError(f"'{field}' continues after its last assistant turn (role "
                        f"{turns[-1][0]!r}); end the conversation with the response")
    return turns[:last], turns[last][1]


def _response(value, field: str) -> tuple[list[Turn] | None, str]:
    """``(context turns or None for plain text, response text)`` of a chosen/rejected value."""
    if isinstance(value, str):
        if is_dialogue(value):
            return _split_conversation(dialogue_turns(value), field)
        return None, value
    if isinstance(value, list):
        return _split_conversation(_messages(value, field), field)
    raise DataError(f"field {field!r} must be a string or a list of {{role, content}} "
                    f"messages; got {_type_name(value)}")


def _missing(record: dict, required: Sequence[str]) -> None:
    for field in required:
        if field not in record:
            keys = [str(k) for k in record]
            close = difflib.get_close_matches(field, [k for k in keys if k not in FIELDS], 1, 0.6)
            hint = f" (found {close[0]!r}: misspelled?)" if close else \
                f" (found {', '.join(map(repr, keys[:6])) or 'no fields'})"
            raise DataError(f"missing field {field!r}{hint}; a record needs {', '.join(required)}")


def _parse(record) -> PreferenceRecord:
    if not isinstance(record, dict):
        raise DataError(f"expected an object with fields {', '.join(FIELDS)}; got "
                        f"{_type_name(record)}")
    implicit = isinstance(record.get("chosen"), list) or (
        isinstance(record.get("chosen"), str) and is_dialogue(record["chosen"]))
    _missing(record, ("chosen", "rejected") if implicit else FIELDS)
    (context_w, chosen), (context_l, rejected) = (_response(record[f], f)
                                                  for f in ("chosen", "rejected"))
    if context_w != context_l:
        raise DataError("chosen and rejected conversations differ before their last assistant "
                        "turn; they must share the prompt")
    prompt = record.get("prompt", "")
    if isinstance(prompt, list):
        prompt_turns = _messages(prompt, "prompt")
    elif isinstance(prompt, str):
        prompt_turns = dialogue_turns(prompt) if is_dialogue(prompt) else None
    else:
        raise DataError(f"field 'prompt' must be a string or a list of {{role, content}} "
                        f"messages; got {_type_name(prompt)}")
    conversational = prompt_turns is not None or context_w is not None
    if conversational:
        turns = [*(prompt_turns if prompt_turns is not None else
                   [("user", prompt)] if prompt else []), *(context_w or [])]
        chosen, rejected, prompt = chosen.strip(), rejected.strip(), ""
    else:
        turns = []
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not tokenize(text):
            raise DataError(f"{field!r} is empty: the pair needs a chosen and a rejected response")
    if chosen == rejected:
        raise DataError("chosen and rejected are identical: the pair carries no preference")
    probes, fields = [], []
    for name, value in record.items():
        if name in FIELDS:
            continue
        if name in PROBE_KINDS:
            if not isinstance(value, str):
                raise DataError(f"probe response {name!r} must be a string; got "
                                f"{_type_name(value)}")
            if tokenize(value):
                probes.append((name, value.strip() if conversational else value))
        elif value is None or isinstance(value, (str, int, float, bool)):
            fields.append((str(name), value))
    return PreferenceRecord(prompt, tuple(turns), chosen, rejected, "", tuple(probes),
                            tuple(fields))


def parse_record(record, where: str) -> PreferenceRecord:
    """Validate one decoded record (a dict) into a ``PreferenceRecord`` located at ``where``;
    a problem raises ``DataError("<where>: <problem>")``."""
    try:
        parsed = _parse(record)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return PreferenceRecord(parsed.prompt, parsed.turns, parsed.chosen, parsed.rejected, where,
                            parsed.probes, parsed.fields)


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
    for number, line in enumerate(raw.split(b"\n"), start=1):
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
            yield parse_record(row, where)
        except DataError as err:
            _skip_or_raise(err, skip, skipped)


def file_format(path: Path) -> tuple[str, bool]:
    """``(format, gzipped)`` from the file name (``pairs.jsonl.gz`` → ``("jsonl", True)``)."""
    suffixes = [s.lower() for s in path.suffixes]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = (suffixes[-2] if len(suffixes) > 1 else "") if gzipped else (suffixes or [""])[-1]
    if suffix not in FORMATS:
        shown = "".join(path.suffixes[-2:] if gzipped else path.suffixes[-1:]) or "(no extension)"
        raise DataError(f"{path}: unknown data format {shown!r}; use "
                        f"{', '.join(FORMATS)} (optionally gzipped, .gz)")
    return FORMATS[suffix], gzipped


def read_records(path: str | Path, *, skip_bad_lines: bool = False
                 ) -> tuple[list[PreferenceRecord], list[str]]:
    """All records of a preference file (see the module docstring) and the messages of the
    records skipped (only with ``skip_bad_lines``)."""
    path = Path(path)
    kind, gzipped = file_format(path)
    try:
        raw = path.read_bytes()
        if gzipped:
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") \
            from None
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
