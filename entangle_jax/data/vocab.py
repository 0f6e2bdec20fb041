"""A word-level tokenizer: whitespace-split words mapped to integer ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, UNK)


class Vocab:
    """An ordered word list; id 0 is padding, 1 begins a sequence, 2 stands for unknown words."""

    kind = "words"

    def __init__(self, words: Iterable[str]):
        seen: dict[str, int] = {}
        for word in (*SPECIAL_TOKENS, *words):
            if not word or any(ch.isspace() for ch in word):
                raise ValueError(f"vocabulary word {word!r} is empty or contains whitespace")
            seen.setdefault(word, len(seen))
        self.words: tuple[str, ...] = tuple(seen)
        self._ids = seen

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.words == other.words

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def bos_id(self) -> int:
        return self._ids[BOS]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    def id(self, word: str) -> int:
        return self._ids.get(word, self.unk_id)

    def encode(self, text: str | Sequence[str]) -> list[int]:
        """Ids of the words of ``text`` (a string is split on whitespace); unknown words map to <unk>."""
        words = text.split() if isinstance(text, str) else text
        return [self.id(w) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "words": list(self.words)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        return cls(data["words"])
