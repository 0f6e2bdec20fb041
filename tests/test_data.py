import numpy as np
import pytest

from entangle_jax.config import ConfigError, DataConfig
from entangle_jax.data import (SHAPES, Vocab, make_sentiment_data, parse_suffix_lengths,
                               response_words, sentiment_pairs, suffix_tokens)
from entangle_jax.data.sentiment import (NEGATIVE_WORDS, POSITIVE_WORDS, SUBJECTS, TEMPLATES,
                                         build_vocab)


def test_generator_scale_meets_the_spec():
    assert len(TEMPLATES) >= 10 and len(SUBJECTS) >= 20
    assert len(set(POSITIVE_WORDS)) >= 40 and len(set(NEGATIVE_WORDS)) >= 40
    assert not set(POSITIVE_WORDS) & set(NEGATIVE_WORDS)


def test_deterministic_for_a_seed_and_seed_sensitive():
    a, b = make_sentiment_data(DataConfig(seed=3)), make_sentiment_data(DataConfig(seed=3))
    c = make_sentiment_data(DataConfig(seed=4))
    assert a.train == b.train and a.eval == b.eval
    assert a.train != c.train


def test_splits_share_no_statement_and_are_balanced():
    data = make_sentiment_data(DataConfig(n_statements=1000))
    train, ev = {s.words for s in data.train}, {s.words for s in data.eval}
    assert not train & ev
    assert len(train) + len(ev) == 1000  # all distinct
    assert abs(np.mean([s.positive for s in data.train + data.eval]) - 0.5) < 1e-9


def test_named_shapes_and_every_length():
    assert response_words(True, SHAPES["single"]) == ["Positive"]
    assert " ".join(response_words(False, SHAPES["short"])) == "Negative sentiment ."
    assert " ".join(response_words(True, SHAPES["long"])) == \
        "Positive sentiment based on my judgement ."
    for length in range(13):
        assert len(suffix_tokens(length)) == length
    with pytest.raises(ConfigError):
        suffix_tokens(-1)


def test_parse_suffix_lengths():
    assert parse_suffix_lengths("single,short,long") == [0, 2, 6]
    assert parse_suffix_lengths("0, 3,long") == [0, 3, 6]
    for bad in ("", "1,,2", "-1", "huge", "99"):
        with pytest.raises(ConfigError):
            parse_suffix_lengths(bad)


def test_vocab_holds_unused_words_and_round_trips():
    vocab = build_vocab(n_unused_words=10)
    data_words = {w for t in TEMPLATES + SUBJECTS + POSITIVE_WORDS + NEGATIVE_WORDS
                  for w in t.split()}
    unused = [w for w in vocab.words if w.startswith("unused")]
    assert len(unused) == 10 and not data_words & set(unused)
    ids = vocab.encode("the movie was wonderful .")
    assert vocab.decode(ids) == "the movie was wonderful .".split()
    assert vocab.encode("zzz-not-a-word") == [vocab.unk_id]
    with pytest.raises(ValueError):
        Vocab(["two words"])


def test_pairs_share_prompt_and_differ_only_in_the_sentiment_token(tiny_data):
    pairs = sentiment_pairs(tiny_data.eval[:5], tiny_data.vocab, 6, 32, 13)
    w, l_ = np.asarray(pairs.chosen.tokens), np.asarray(pairs.rejected.tokens)
    start = np.asarray(pairs.chosen.start)
    assert (start == np.asarray(pairs.rejected.start)).all()
    assert (np.asarray(pairs.chosen.length) == 7).all()
    diff = w != l_
    assert (diff.sum(1) == 1).all() and (diff.argmax(1) == start).all()
    for row, s in enumerate(tiny_data.eval[:5]):
        word = tiny_data.vocab.decode([w[row, start[row]]])[0]
        assert word == ("Positive" if s.positive else "Negative")


def test_a_sequence_longer_than_the_context_is_refused(tiny_data):
    with pytest.raises(ConfigError, match="does not fit"):
        sentiment_pairs(tiny_data.eval[:2], tiny_data.vocab, 12, 10, 13)
