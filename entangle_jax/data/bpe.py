"""A pretrained model's byte-level BPE tokenizer and its ChatML chat template.

Built with the ``tokenizers`` package from a vocabulary and merge list (as a GGUF file carries
them), never with ``transformers``. Text is split in two steps before the merges apply: every
digit on its own (``\\p{N}``), then GPT-2's pattern
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``
on the byte-level alphabet: the "smollm" pre-tokenizer of llama.cpp and SmolLM2's own tokenizer.
Control tokens (``<|im_start|>``, ``<|im_end|>``, …) are matched whole wherever they occur in text.
No beginning-of-sequence token is added.

The chat template (SmolLM2's) renders a conversation as ChatML turns; a conversation that does not
open with a system turn gets the model's default system prompt first::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n                                    (the generation prompt)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

DIGITS = r"\p{N}"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

Turn = tuple[str, str]  # (role, content)


class ChatTokenizer:
    """Byte-level BPE with ChatML turns. ``pad_id`` fills the slots after a sequence (never
    attended to by a real token, so any id works; the model's own padding id by default)."""

    kind = "bpe"

    def __init__(self, backend: Tokenizer, *, system_prompt: str, pad_id: int):
        self.backend = backend
        self.system_prompt = system_prompt
        self.pad_id = pad_id

    @classmethod
    def from_vocabulary(cls, tokens: Sequence[str], merges: Sequence[str], special: Sequence[int],
                        *, system_prompt: str, pad_id: int) -> "ChatTokenizer":
        """``tokens`` in the byte-level alphabet (id = index), ``merges`` as "a b" strings in rank
        order, ``special`` the ids of control tokens."""
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                         merges=[tuple(m.split(" ")) for m in merges])
        backend = Tokenizer(bpe)
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(DIGITS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                    for i in special])
        return cls(backend, system_prompt=system_prompt, pad_id=pad_id)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __eq__(self, other) -> bool:
        return isinstance(other, ChatTokenizer) and self.to_dict() == other.to_dict()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        found = self.backend.token_to_id(token)
        if found is None:
            raise KeyError(f"{token!r} is not a token of this vocabulary")
        return found

    def format_chat(self, turns: Sequence[Turn], *, add_generation_prompt: bool = True) -> str:
        """The ChatML text of ``turns`` (the default system turn first unless one is given)."""
        if not turns or turns[0][0] != "system":
            turns = [("system", self.system_prompt), *turns]
        text = "".join(f"{IM_START}{role}\n{content}{IM_END}\n" for role, content in turns)
        return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")

    def encode_chat(self, turns: Sequence[Turn]) -> list[int]:
        """Ids of the ChatML prompt of ``turns``, ending with the assistant's generation prompt."""
        return self.encode(self.format_chat(turns))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "backend": json.loads(self.backend.to_str()),
                "system_prompt": self.system_prompt, "pad_id": self.pad_id}

    @classmethod
    def from_dict(cls, data: dict) -> "ChatTokenizer":
        return cls(Tokenizer.from_str(json.dumps(data["backend"])),
                   system_prompt=data["system_prompt"], pad_id=int(data["pad_id"]))


def default_system_prompt(chat_template: str) -> str:
    """The system prompt a ChatML Jinja template inserts when a conversation has none."""
    match = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template, re.S)
    if match is None:
        raise ValueError("the chat template has no default ChatML system turn; only ChatML "
                         "templates such as SmolLM2's are supported")
    return match.group(1)
