"""Live comparison of the SmolLM2 port with Hugging Face transformers on the same GGUF file
(``make test-reference``: installs the `reference` extra, runs ``pytest -m reference``).

Beyond the committed fixture (tests/test_smollm2.py) this checks the token ids of at least 1,000
texts of the real data, the chat template on real conversations, the converted weights tensor by
tensor, the full logits and the gradient statistics of real pairs."""

import gzip
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.reference
pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent / "reference"))
import smollm2_torch as reference  # noqa: E402

from entangle_jax.data.records import read_records  # noqa: E402
from entangle_jax.data.pairs import Pairs, pack_responses  # noqa: E402
from entangle_jax.gradients import pair_geometry  # noqa: E402
from entangle_jax.logprob import logits  # noqa: E402
from entangle_jax.models import in_precision  # noqa: E402
from entangle_jax.pytrees import leaf_keys  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def hf():
    return reference.load()


def real_texts() -> list[str]:
    """Prompts, responses and probe responses of the learning-dynamics test file and whole
    harmless-base dialogues: 1,000+ texts with unicode, digits, code and long whitespace."""
    texts = []
    path = DATA / "learning-dynamics-helpful-base" / "formal_prob_test.jsonl.gz"
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()[:150]:
        record = json.loads(line)
        texts += [v for v in record.values() if isinstance(v, str)]
    path = DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()[:200]:
        texts.append(json.loads(line)["chosen"])
    return texts


def test_token_ids_of_real_texts(smollm2, hf):
    tokenizer, _ = hf
    texts = real_texts()
    assert len(texts) >= 1000
    mismatched = [t for t in texts if smollm2.tokenizer.encode(t) != reference.ids_of(tokenizer, t)]
    assert mismatched == [], f"{len(mismatched)} of {len(texts)} texts differ: {mismatched[:2]!r}"


def test_transformers_gpt2_split_differs_only_before_digits(smollm2):
    """Without the file's pre-tokenizer (transformers' fallback for "smollm"), the ids differ
    exactly on texts where a whitespace run meets a digit."""
    from transformers import AutoTokenizer

    fallback = AutoTokenizer.from_pretrained(reference.gguf_folder(),
                                             gguf_file=reference.GGUF_FILE)
    texts = real_texts()
    differ = [smollm2.tokenizer.encode(t) != reference.ids_of(fallback, t) for t in texts]
    whitespace_digit = [re.search(r"\s\d", t) is not None for t in texts]
    assert all(w for d, w in zip(differ, whitespace_digit) if d)
    assert 0 < sum(differ) < sum(whitespace_digit)


def test_chat_template_of_real_conversations(smollm2, hf):
    tokenizer, _ = hf
    records, _ = read_records(DATA / "learning-dynamics-helpful-base" / "formal_prob_test.jsonl.gz",
                              skip_bad_lines=True)
    for record in records[:50]:
        messages = [{"role": r, "content": c} for r, c in record.turns]
        expected = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        assert smollm2.tokenizer.format_chat(record.turns) == expected


def test_converted_weights_equal_transformers(smollm2, hf):
    _, model = hf
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm", "q": "self_attn.q_proj",
             "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for key, value in zip(leaf_keys(smollm2.params), jax.tree.leaves(smollm2.params)):
        parts = key.split("/")
        if key == "token_embed/embedding":
            theirs = state["model.embed_tokens.weight"]
        elif key == "ln_f/scale":
            theirs = state["model.norm.weight"]
        elif parts[2] in ("ln1", "ln2"):
            theirs = state[f"model.layers.{parts[1]}.{names[parts[2]]}.weight"]
        else:
            theirs = state[f"model.layers.{parts[1]}.{names[parts[3]]}.weight"].T
        np.testing.assert_array_equal(np.asarray(value), theirs, err_msg=key)


@pytest.mark.parametrize("text", reference.TEXTS, ids=lambda t: t[:24])
def test_full_logits(smollm2, hf, text):
    tokenizer, model = hf
    ids = reference.ids_of(tokenizer, text)
    ref = reference.logits_of(model, ids)
    z = np.asarray(logits(smollm2.graphdef, smollm2.params, jnp.asarray(ids)), np.float64)
    assert np.max(np.abs(z - ref) / np.abs(ref).max(-1, keepdims=True)) <= 1e-4


def test_gradient_statistics_of_real_pairs(smollm2, hf):
    """Three more real pairs than the fixture's (longer responses), in float64 against torch
    float64 (relative 1e-5: transformers keeps its rotary tables and RMSNorm in float32)."""
    import torch

    tokenizer, model = hf
    rows = reference.fixture_pairs(tokenizer)
    prompts = [r["prompt_ids"] for r in rows]
    seq_len = max(len(p) for p in prompts) + reference.RESPONSE_TOKENS
    pack = lambda key: pack_responses(prompts, [r[key] for r in rows], seq_len,  # noqa: E731
                                      reference.RESPONSE_TOKENS, 2)
    with jax.enable_x64(True):
        _, graphdef, params = in_precision(smollm2.model_config, smollm2.params, "float64")
        geo = pair_geometry(graphdef, params, Pairs(pack("chosen_ids"), pack("rejected_ids")),
                            implementation="auto")
    for k, row in enumerate(rows):
        ref = reference.pair_stats(model, row["prompt_ids"], row["chosen_ids"],
                                   row["rejected_ids"], torch.float64)
        for name, value in ref.items():
            assert float(getattr(geo, name)[k]) == pytest.approx(value, rel=1e-5), name
