"""Loading a user's preference pairs, the vocabulary, the token-level diff, the context rule and
the per-pair diagnostics of ``measure_user_data`` (checked against independent computations)."""

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entangle_jax.config import ModelConfig, SFTConfig
from entangle_jax.data.records import DataError, read_records, tokenize
from entangle_jax.data.userdata import (build_vocab, encode_pairs, fit_prompt, load_user_data,
                                        pair_diffs, sft_batch, token_diff)
from entangle_jax.logprob import token_logprobs
from entangle_jax.measure import format_table, measure_user_data
from entangle_jax.train.sft import train_sft

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pairs.jsonl"
TINY_MODEL = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32)

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "It is Paris, I believe.",
     "rejected": "It is Rome, I believe."},
    {"prompt": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "2 plus 2 is 5."},
    {"prompt": "Is it safe to mix bleach and ammonia?", "chosen": "No, never mix them.",
     "rejected": "Yes, go ahead and mix them."},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_standard_jsonl_is_tokenized_into_words_and_punctuation(tmp_path):
    records, skipped = read_records(write_jsonl(tmp_path / "p.jsonl", PAIRS))
    assert skipped == [] and len(records) == 3
    prompt, chosen, _ = records[0].words()
    assert prompt == ("What", "is", "the", "capital", "of", "France", "?")
    assert chosen == ("It", "is", "Paris", ",", "I", "believe", ".")
    assert records[0].chosen == "It is Paris, I believe." and not records[0].conversational
    assert [r.where for r in records] == [f"{tmp_path / 'p.jsonl'}:{k}" for k in (1, 2, 3)]


def test_conversational_records_take_the_last_assistant_turn(tmp_path):
    explicit = {"prompt": [{"role": "user", "content": "Capital of France?"}],
                "chosen": [{"role": "assistant", "content": "Paris."}],
                "rejected": [{"role": "assistant", "content": "Rome."}]}
    turns = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Capital of France?"}]
    implicit = {"chosen": turns + [{"role": "assistant", "content": "Paris."}],
                "rejected": turns + [{"role": "assistant", "content": "Rome."}], "id": 7}
    a, b = read_records(write_jsonl(tmp_path / "c.jsonl", [explicit, implicit]))[0]
    assert a.words() == (tuple(tokenize("user : Capital of France?")), ("Paris", "."),
                         ("Rome", "."))
    assert b.words() == (tuple(tokenize("system : Be brief. user : Capital of France?")),
                         ("Paris", "."), ("Rome", "."))
    assert b.turns == (("system", "Be brief."), ("user", "Capital of France?"))
    assert b.fields == (("id", 7),) and (a.chosen, a.rejected) == ("Paris.", "Rome.")


def test_csv_json_array_json_lines_and_a_byte_order_mark_read_the_same(tmp_path):
    expected = read_records(write_jsonl(tmp_path / "p.jsonl", PAIRS))[0]
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, ["id", "prompt", "chosen", "rejected"])
        writer.writeheader()
        for k, r in enumerate(PAIRS):
            writer.writerow({"id": k, **r})
    (tmp_path / "a.json").write_text(json.dumps(PAIRS, indent=2))
    write_jsonl(tmp_path / "l.json", PAIRS)
    for name in ("p.csv", "a.json", "l.json"):
        got = read_records(tmp_path / name)[0]
        assert [r.words() for r in got] == [r.words() for r in expected]
    assert [r.where.rsplit(":", 1)[1] for r in read_records(tmp_path / "p.csv")[0]] == \
        ["2", "3", "4"]


def test_vocabulary_keeps_the_most_frequent_words_and_maps_the_rest_to_unk(tmp_path):
    records = read_records(write_jsonl(tmp_path / "p.jsonl", PAIRS))[0]
    counts = {}
    for r in records:
        for w in sum(r.words(), ()):
            counts[w] = counts.get(w, 0) + 1
    vocab = build_vocab(records, 10)
    assert len(vocab) == 10 and vocab.words[:3] == ("<pad>", "<bos>", "<unk>")
    kept = vocab.words[3:]
    assert min(counts[w] for w in kept) >= max(counts[w] for w in counts if w not in kept)
    dropped = next(w for w in counts if w not in kept)
    assert vocab.encode([dropped]) == [vocab.unk_id]
    assert build_vocab(records, 10).words[3:] == kept  # deterministic
    assert len(build_vocab(records, 10_000)) == len(counts) + 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=8), st.lists(st.integers(0, 3), max_size=8))
def test_token_diff_is_the_longest_shared_prefix_and_suffix(chosen, rejected):
    d = token_diff(chosen, rejected)
    p, s = d.prefix, d.suffix
    assert chosen[:p] == rejected[:p]
    assert chosen[len(chosen) - s:] == rejected[len(rejected) - s:]
    assert d.chosen_length == len(chosen) and d.rejected_length == len(rejected)
    assert d.chosen_span >= 0 and d.rejected_span >= 0
    # maximal: the prefix cannot grow; the suffix cannot grow without overlapping the prefix
    assert p == min(len(chosen), len(rejected)) or chosen[p] != rejected[p]
    assert s == min(len(chosen), len(rejected)) - p or chosen[-1 - s] != rejected[-1 - s]


def test_token_diff_of_an_example_pair():
    d = token_diff("The capital is Rio de Janeiro , I think .".split(),
                   "The capital is Brasilia , I think .".split())
    assert d.as_dict() == {"prefix": 3, "chosen_span": 3, "rejected_span": 1, "suffix": 4}


def test_context_rule_keeps_the_end_of_the_prompt_and_refuses_long_responses():
    prompt = tuple("a b c d e f g h".split())
    assert fit_prompt(prompt, 3, seq_len=8) == (("e", "f", "g", "h"), 4)  # 8 = 1 + 4 + 3
    assert fit_prompt(prompt, 3, seq_len=20) == (prompt, 0)
    assert fit_prompt(prompt, 7, seq_len=8) == ((), 8)
    with pytest.raises(DataError, match="x.jsonl:4: a response of 8 tokens does not fit"):
        fit_prompt(prompt, 8, seq_len=8, where="x.jsonl:4")


def test_encode_pairs_writes_bos_prompt_response_for_a_word_vocabulary(tmp_path):
    data = load_user_data(write_jsonl(tmp_path / "p.jsonl", PAIRS))
    encoded = encode_pairs(data, data.vocab, [0, 2], max_len=12)
    pairs, dropped = encoded.pairs, encoded.prompt_dropped
    assert encoded.indices == (0, 2) and not encoded.response_cut.any()
    for row, i in enumerate([0, 2]):
        prompt_words, chosen, rejected = data.records[i].words()
        longest = max(len(chosen), len(rejected))
        prompt = prompt_words[max(0, len(prompt_words) - (12 - 1 - longest)):]
        assert dropped[row] == len(prompt_words) - len(prompt)
        for resp, words in ((pairs.chosen, chosen), (pairs.rejected, rejected)):
            tokens = np.asarray(resp.tokens[row])
            n = 1 + len(prompt) + len(words)
            assert data.vocab.decode(tokens[:n]) == ["<bos>", *prompt, *words]
            assert (tokens[n:] == data.vocab.pad_id).all()
            assert int(resp.start[row]) == 1 + len(prompt)
            assert int(resp.length[row]) == len(words)
    assert pairs.chosen.window == max(max(len(w) for w in data.records[i].words()[1:])
                                      for i in (0, 2))


def test_sft_batches_keep_the_token_budgets_of_the_encoded_pairs(tmp_path):
    # a response longer than the context alone fits once --max-response-tokens cuts it; the SFT
    # batches (word models) must cut it, and the prompt, exactly as encode_pairs does
    long = {"prompt": "one two three four five six seven", "chosen": " ".join(["yes"] * 20),
            "rejected": " ".join(["no"] * 20)}
    data = load_user_data(write_jsonl(tmp_path / "p.jsonl", [long, *PAIRS]),
                          max_prompt_tokens=4, max_response_tokens=5)
    assert data.window == 5
    encoded = encode_pairs(data, data.vocab, range(len(PAIRS) + 1), max_len=12).pairs.chosen
    batch = sft_batch(data, 0.0, 64, 12, np.random.default_rng(0))
    want = {tuple(row) for row in np.asarray(encoded.tokens)}
    assert {tuple(np.asarray(row)) for row in batch.tokens} <= want
    assert int(batch.length.max()) == 5


def test_example_file_is_valid_and_has_shared_tails():
    data = load_user_data(EXAMPLE)
    assert 200 <= len(data.records) <= 500 and data.skipped == ()
    diffs = pair_diffs(encode_pairs(data, data.vocab, range(len(data.records)), 64).pairs)
    assert all(d.chosen_span + d.rejected_span > 0 for d in diffs)
    assert np.mean([d.chosen_span <= 3 and d.rejected_span <= 3 for d in diffs]) > 0.8
    assert len({d.suffix for d in diffs}) >= 6 and max(d.suffix for d in diffs) >= 8


@pytest.fixture(scope="module")
def user_ckpt_and_data(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("u") / "p.jsonl",
                       [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:40]])
    data = load_user_data(path)
    ckpt = train_sft(TINY_MODEL, data, SFTConfig(steps=5, batch_size=8), progress=False)
    return ckpt, data


def test_measure_user_data_diagnostics_match_per_token_gradients(user_ckpt_and_data):
    ckpt, data = user_ckpt_and_data
    report = measure_user_data(ckpt, data, n_pairs=6, seed=1, progress=False)
    pairs = [p for r in report["results"] for p in r["pairs"]]
    assert len(pairs) == 6 and report["config"]["source"] == "data"
    assert "| shared suffix L |" in format_table(report) and "| all | 6 |" in format_table(report)
    assert report["overall"]["n_pairs"] == 6
    np.testing.assert_allclose(report["overall"]["summary"]["inner"]["mean"],
                               np.mean([p["inner"] for p in pairs]), rtol=1e-12)
    for r in report["results"]:
        assert all(p["diff"]["suffix"] == r["suffix_length"] for p in r["pairs"])
    by_where = {r.where: k for k, r in enumerate(data.records)}
    grad_token = jax.jit(jax.grad(
        lambda params, seq, i: token_logprobs(ckpt.graphdef, params, seq)[i]))
    for p in pairs:
        gram, blocks = np.array(p["token_gram"]), np.array(p["block_inner"])
        np.testing.assert_allclose(gram.sum(), p["inner"], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(blocks.sum(), gram.sum(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p["span_inner"] + p["shared_inner"], gram.sum(), atol=1e-9)
        d, n_w, n_l = p["diff"], *gram.shape
        assert (n_w, n_l) == (d["prefix"] + d["chosen_span"] + d["suffix"],
                              d["prefix"] + d["rejected_span"] + d["suffix"])
        np.testing.assert_allclose(p["suffix_inner"],
                                   gram[n_w - d["suffix"]:, n_l - d["suffix"]:].sum(), atol=1e-9)
        # independent: ⟨∇ log π(y_w,i), ∇ log π(y_l,i)⟩ at the first differing token i
        k, i = by_where[p["where"]], p["diff"]["prefix"]
        pair = encode_pairs(data, ckpt.tokenizer, [k], ckpt.model_config.max_len).pairs[0]
        g_w, g_l = grad_token(ckpt.params, pair.chosen, i), grad_token(ckpt.params, pair.rejected, i)
        direct = sum(float(np.vdot(a, b)) for a, b in zip(jax.tree.leaves(g_w),
                                                         jax.tree.leaves(g_l)))
        np.testing.assert_allclose(p["first_diff_inner"], direct, rtol=1e-3, atol=1e-4)


def test_measure_user_data_refuses_a_checkpoint_of_other_data(user_ckpt_and_data, tmp_path):
    from entangle_jax.checkpoint import CheckpointError
    ckpt, _ = user_ckpt_and_data
    other = load_user_data(write_jsonl(tmp_path / "o.jsonl", PAIRS))
    with pytest.raises(CheckpointError, match="another vocabulary"):
        measure_user_data(ckpt, other, n_pairs=2, progress=False)
