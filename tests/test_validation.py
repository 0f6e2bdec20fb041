"""Bad input gets one clear line and exit status 2, never a traceback or a silent wrong answer;
random records and random configs give a clean error or a valid result; NaN/Inf stops a run and
keeps the last good checkpoint; log-probs stay finite on extreme logits."""

import contextlib
import io
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entangle_jax.checkpoint import CheckpointError, load_checkpoint
from entangle_jax.cli import UsageError, build_parser, main
from entangle_jax.cli.common import configs_from_args
from entangle_jax.config import ConfigError, DataConfig, ModelConfig, SFTConfig
from entangle_jax.data import make_sentiment_data
from entangle_jax.data.records import DataError, read_records
from entangle_jax.data.userdata import UserDataConfig, load_user_data
from entangle_jax.guards import NonFiniteError, check_array_finite
from entangle_jax.logprob import logits, token_logprobs
from entangle_jax.objectives import get_objective, known_names
from entangle_jax.train.sft import train_sft

GOOD = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "It is 5."}
TINY = ["--batch-size", "4", "--width", "16", "--layers", "1", "--heads", "2"]


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                   for r in records).encode()


# Each bad file: its name, its bytes, extra options, and what the one line must say.
BAD_FILES = [
    ("empty", "p.jsonl", b"", [], "p.jsonl: empty file: no preference pairs"),
    ("blank lines", "p.jsonl", b"\n  \n", [], "empty file"),
    ("missing field", "p.jsonl", jsonl(GOOD, {"prompt": "q", "chosen": "a"}), [],
     "p.jsonl:2: missing field 'rejected'"),
    ("misspelled field", "p.jsonl", jsonl({"prompt": "q", "choosen": "a", "rejected": "b"}), [],
     "p.jsonl:1: missing field 'chosen' (found 'choosen': misspelled?)"),
    ("empty chosen", "p.jsonl", jsonl(GOOD, {**GOOD, "chosen": "  "}), [],
     "p.jsonl:2: 'chosen' is empty"),
    ("identical", "p.jsonl", jsonl({**GOOD, "rejected": GOOD["chosen"]}), [],
     "p.jsonl:1: chosen and rejected are identical: the pair carries no preference"),
    ("identical up to spacing", "p.jsonl", jsonl({**GOOD, "rejected": "It is 4 ."}), [],
     "carries no preference"),
    ("non-UTF-8", "p.jsonl", jsonl(GOOD) + b'{"prompt": "caf\xe9"}\n', [],
     "p.jsonl:2: not valid UTF-8 (byte 0xe9 at column 16)"),
    ("not JSON", "p.jsonl", jsonl(GOOD, GOOD, "{'prompt': 'q'}"), [],
     "p.jsonl:3: not valid JSON (Expecting property name enclosed in double quotes at column 2);"
     " pass --skip-bad-lines to skip such records"),
    ("not an object", "p.jsonl", jsonl(["q", "a", "b"]), [], "p.jsonl:1: expected an object"),
    ("wrong type", "p.jsonl", jsonl({**GOOD, "chosen": 4}), [],
     "p.jsonl:1: field 'chosen' must be a string or a list of {role, content} messages; got a "
     "number"),
    ("no assistant turn", "p.jsonl",
     jsonl({"prompt": "q", "chosen": [{"role": "user", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}), [],
     "p.jsonl:1: 'chosen' has no assistant turn"),
    ("bad message", "p.jsonl",
     jsonl({"prompt": "q", "chosen": [{"role": "assistant"}],
            "rejected": [{"role": "assistant", "content": "b"}]}), [],
     "p.jsonl:1: 'chosen' message 0 must be an object with string 'role' and 'content'"),
    ("conversations disagree", "p.jsonl",
     jsonl({"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "y"},
                         {"role": "assistant", "content": "b"}]}), [],
     "p.jsonl:1: chosen and rejected conversations differ before their last assistant turn"),
    ("unknown format", "p.txt", jsonl(GOOD), [], "p.txt: unknown data format '.txt'"),
    ("csv missing column", "p.csv", b"prompt,chosen,rejectd\nq,a,b\n", [],
     "p.csv:1: missing column 'rejected' (found 'rejectd': misspelled?)"),
    ("csv extra value", "p.csv", b"prompt,chosen,rejected\nq,a,b\nq,a,b,c\n", [],
     "p.csv:3: more values than the header has columns"),
    ("json array record", "p.json", json.dumps([GOOD, {"prompt": "q"}]).encode(), [],
     "p.json:record 1: missing field 'chosen'"),
    ("response beyond context", "p.jsonl",
     jsonl(GOOD, {**GOOD, "chosen": "one two three four five six seven eight"}),
     ["--max-len", "8"], "p.jsonl:2: a response of 8 tokens does not fit the model's context of "
                         "8 tokens (one is <bos>); raise --max-len"),
    ("identical after <unk>", "p.jsonl",
     jsonl(GOOD, GOOD, {"prompt": "q", "chosen": "It is zebra", "rejected": "It is yak"}),
     ["--vocab-size", "8"], "p.jsonl:3: chosen and rejected differ only in words outside the "
                            "8-word vocabulary"),
    ("vocabulary too small", "p.jsonl", jsonl(GOOD), ["--vocab-size", "3"],
     "UserDataConfig.vocab_size=3 is invalid: must be an integer > 3"),
    ("every line skipped", "p.jsonl", jsonl("nope", "{"), ["--skip-bad-lines"],
     "p.jsonl: no usable preference pairs; 2 skipped (first: "),
]


@pytest.mark.parametrize("name, filename, content, extra, message", BAD_FILES,
                         ids=[b[0] for b in BAD_FILES])
@pytest.mark.parametrize("command", ["train", "measure"])
def test_bad_data_gives_one_line_and_status_2(tmp_path, capsys, command, name, filename,
                                               content, extra, message):
    path = tmp_path / filename
    path.write_bytes(content)
    argv = [command, "--data", str(path), "--out", str(tmp_path / "o"), "--steps", "0", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("entangle: error: ") and message in err, err


@pytest.mark.parametrize("path, message", [
    ("/no/such/file.jsonl", "/no/such/file.jsonl: cannot read (No such file or directory)"),
    (".", "unknown data format"),
])
def test_missing_file_or_directory(path, message, capsys):
    assert main(["train", "--data", path, "--steps", "0"]) == 2
    assert message in capsys.readouterr().err


def test_a_directory_named_like_data(tmp_path, capsys):
    (tmp_path / "d.jsonl").mkdir()
    assert main(["train", "--data", str(tmp_path / "d.jsonl"), "--steps", "0"]) == 2
    assert "d.jsonl: cannot read (Is a directory)" in capsys.readouterr().err


def test_skip_bad_lines_reports_each_skipped_line(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(GOOD, "not json", {**GOOD, "rejected": "It is 4."}, GOOD))
    argv = ["train", "--data", str(path), "--out", str(tmp_path / "o"), "--steps", "0"]
    assert main(argv) == 2 and "p.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert main([*argv, "--skip-bad-lines"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "p.jsonl:2: not valid JSON" in err
    assert "p.jsonl:3: chosen and rejected are identical" in err
    assert load_checkpoint(tmp_path / "o").user_data.skip_bad_lines
    assert len(load_user_data(path, skip_bad_lines=True).records) == 2


def test_long_prompts_are_truncated_with_a_warning(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(GOOD, {**GOOD, "prompt": " ".join(["word"] * 40)}))
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--steps", "0"]) == 0
    assert "1 of 2 prompts are longer than the context of 32 tokens allows; they keep their " \
           "last tokens" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--learning-rate", "0"], "learning_rate=0.0 is invalid: must be > 0"),
    (["train", "--learning-rate", "nan"], "learning_rate=nan is invalid: must be a finite number"),
    (["train", "--learning-rate", "inf"], "learning_rate=inf is invalid: must be a finite number"),
    (["train", "--label-flip", "-0.1"], "label_flip=-0.1 is invalid: must lie in [0, 1]"),
    (["train", "--label-flip", "1.5"], "label_flip=1.5 is invalid: must lie in [0, 1]"),
    (["train", "--max-len", "0"], "0 must be a positive integer"),
    (["train", "--vocab-size", "many"], "'many' is not an integer"),
    (["dynamics", "--objective", "dpx"], "objective 'dpx' is unknown; known: "),
    (["dynamics", "--objective", "dpo", "--hparam", "beta=0"],
     "objective dpo: beta=0.0 is invalid: must be > 0"),
    (["dynamics", "--objective", "dpo", "--hparam", "beta=-1"], "beta=-1.0 is invalid"),
    (["dynamics", "--objective", "sppo", "--hparam", "eta=0"],
     "objective sppo: eta=0.0 is invalid: must be > 0"),
    (["dynamics", "--lr", "0"], "--lr"),
    (["dynamics", "--lr", "-0.1"], "--lr"),
    (["measure", "--data", "x.jsonl", "--suffix-lengths", "0,2"],
     "--suffix-lengths applies to the sentiment task"),
])
def test_bad_values_give_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_a_bad_memory_budget_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ENTANGLE_JAX_MEMORY_BUDGET", "lots")
    assert main(["train", "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ENTANGLE_JAX_MEMORY_BUDGET='lots' is invalid" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_objective("dpx")
    assert all(name in str(err.value) for name in known_names())


# ------------------------------------------------------------------------------------------------
# Property tests: random records, random files, random configs
# ------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["role", "content", "x"]) | st.text(max_size=5),
                      children, max_size=4),
    max_leaves=12)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | st.text(max_size=4),
     "content": st.text(max_size=20)}), max_size=4)
fields = st.text(alphabet="ab .,?!é\n\t 12", max_size=20) | messages | json_values
records = st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "choosen", "id"]),
                          fields, max_size=5) | json_values


def _check_valid(result):
    for r in result:
        prompt, chosen, rejected = r.words()
        assert chosen and rejected and r.chosen != r.rejected
        assert all(w and not any(c.isspace() for c in w) for w in prompt + chosen + rejected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=0, max_size=6), st.booleans(), st.sampled_from(
    [".jsonl", ".json", ".csv"]))
def test_random_records_give_a_clean_error_or_valid_pairs(rows, skip, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        if suffix == ".csv":
            import csv
            import io
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["prompt", "chosen", "rejected"])
            for row in rows:
                values = row.values() if isinstance(row, dict) else [row]
                writer.writerow([v if isinstance(v, str) else json.dumps(v) for v in values])
            path.write_text(buffer.getvalue(), encoding="utf-8")
        else:
            path.write_bytes(jsonl(*[json.dumps(r) for r in rows]) if suffix == ".jsonl"
                             else json.dumps(rows).encode())
        try:
            result, skipped = read_records(path, skip_bad_lines=skip)
        except DataError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err)
            return
        _check_valid(result)
        assert skip or not skipped


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_give_a_clean_error_or_valid_pairs(content, skip):
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".jsonl", ".csv"):
            path = Path(tmp) / f"p{suffix}"
            path.write_bytes(content)
            try:
                _check_valid(load_user_data(path, vocab_size=64, skip_bad_lines=skip).records)
            except DataError as err:
                assert str(err).startswith(str(path)) and "\n" not in str(err)


config_values = (st.none() | st.booleans() | st.integers(-5, 600) | st.text(max_size=4)
                 | st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([ModelConfig, DataConfig, SFTConfig, UserDataConfig]), st.data())
def test_random_configs_give_a_config_error_or_a_valid_config(cls, data):
    import dataclasses
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("path", "sha256")]
    kwargs = data.draw(st.dictionaries(st.sampled_from(names), config_values, max_size=3))
    if cls is UserDataConfig:
        kwargs |= {"path": "p.jsonl", "sha256": "0"}
    try:
        config = cls(**kwargs)
    except ConfigError as err:
        assert "\n" not in str(err) and "is invalid" in str(err)
        return
    for name, value in dataclasses.asdict(config).items():  # what passed is usable as such
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["--learning-rate", "--label-flip", "--steps", "--width",
                                 "--heads", "--layers", "--max-len", "--batch-size",
                                 "--vocab-size", "--pretrain-steps", "--seed"]), max_size=4),
       st.lists(st.sampled_from(["0", "-1", "1", "3", "64", "0.5", "1e30", "nan", "inf", "-inf",
                                 "x", "", "1.5"]), min_size=4, max_size=4))
def test_random_command_lines_give_a_clean_error_or_valid_configs(options, values):
    argv = ["train"] + [item for pair in zip(options, values) for item in pair]
    try:
        configs = configs_from_args(build_parser().parse_args(argv))
    except (UsageError, ConfigError) as err:
        assert "\n" not in str(err)
        return
    assert all(isinstance(c, (ModelConfig, DataConfig, SFTConfig)) for c in configs)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(known_names()) | st.text(max_size=8),
       st.dictionaries(st.sampled_from(["beta", "tau", "gamma", "eta", "lam", "alpha", "delta",
                                        "lambda", "zeta"]),
                       st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3)
                       | st.text(max_size=3) | st.none(), max_size=3))
def test_random_objectives_give_a_config_error_or_a_usable_objective(name, hparams):
    try:
        objective = get_objective(name, **hparams)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    d_w, d_l = objective.weights(-3.0, -4.0, -3.5, -3.5, 2.0, 2.0)
    assert np.isfinite(d_w) and np.isfinite(d_l)
    assert all(math.isfinite(v) for _, v in objective.hparams)


# ------------------------------------------------------------------------------------------------
# Numerical safety
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory):
    """``entangle train`` with a learning rate of 1e30: the parameters overflow within a few
    steps and the NaN guard stops the run, leaving an unfinished run on disk. Returns the
    directory, the last stderr line and the run's (model, data, sft) configs."""
    out = tmp_path_factory.mktemp("unfinished") / "run"
    argv = ["train", "--out", str(out), "--steps", "6", "--learning-rate", "1e30",
            "--checkpoint-every", "1", *TINY]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(argv) == 2
    model, data_config, sft = configs_from_args(build_parser().parse_args(argv))
    return out, stderr.getvalue().strip().splitlines()[-1], (model, data_config, sft)


def test_nan_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(unfinished_run):
    out, last, _ = unfinished_run
    assert "Traceback" not in last
    step = int(last.split("step ")[1].split(":")[0])
    assert last.startswith(f"entangle: error: step {step}: ")
    assert any(f": {q} is NaN or Inf" in last for q in ("loss", "gradient", "parameters"))
    assert last.endswith(f"last good checkpoint: {out} (step {step - 1})")
    kept = load_checkpoint(out)  # loadable, finite, and recorded as the step before the failure
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(kept.params))
    assert json.loads((out / "config.json").read_text())["training"]["step"] == step - 1
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, step))


def test_guard_names_the_quantity_and_the_item():
    check_array_finite("log π_w", [-1.0, -2.0], ["a:1", "a:2"])
    with pytest.raises(NonFiniteError, match=r"log π_w is NaN or Inf at a:2 \(1 such value"):
        check_array_finite("log π_w", [-1.0, np.nan], ["a:1", "a:2"])


def test_log_probs_are_stable_on_extreme_logits(tiny_ckpt, make_pairs):
    """Scale the unembedding until the logits span ~10⁴: log-softmax stays finite and equals a
    float64 computation, where log(softmax) underflows to -inf."""
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 3e5 if "unembed" in jax.tree_util.keystr(p) else x, tiny_ckpt.params)
    pairs = make_pairs(2, n=3)
    for row in range(3):
        seq = pairs.chosen[row]
        z = np.asarray(logits(tiny_ckpt.graphdef, params, seq.tokens), np.float64)
        start, n = int(seq.start), int(seq.length)
        rows = z[start - 1:start - 1 + n]
        assert np.ptp(rows, axis=-1).min() > 1e3  # the logits really are extreme
        top = rows.max(-1, keepdims=True)
        reference = rows - top - np.log(np.exp(rows - top).sum(-1, keepdims=True))
        target = np.asarray(seq.tokens)[start:start + n]
        expected = reference[np.arange(n), target]
        got = np.asarray(token_logprobs(tiny_ckpt.graphdef, params, seq))[:n]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)
        with np.errstate(divide="ignore"):
            naive = np.log(np.asarray(jax.nn.softmax(jnp.asarray(rows, jnp.float32), axis=-1)))
        assert np.isneginf(naive).any()  # the unstable formula fails on the same logits


# ------------------------------------------------------------------------------------------------
# Checkpoints from another config, corrupt training state
# ------------------------------------------------------------------------------------------------

def test_an_unfinished_run_is_not_overwritten_without_resume(unfinished_run, capsys):
    out, last, _ = unfinished_run
    step = json.loads((out / "config.json").read_text())["training"]["step"]
    assert main(["train", "--out", str(out), "--steps", "6", *TINY]) == 2
    assert f"{out} holds an unfinished run (step {step} of 6); pass --resume to continue it" in \
        capsys.readouterr().err


def test_resume_with_other_settings_lists_the_differences(unfinished_run, capsys):
    out, _, _ = unfinished_run
    argv = ["train", "--out", str(out), "--steps", "6", "--learning-rate", "1e-3", "--resume",
            *TINY, "--batch-size", "8"]  # the last --batch-size wins
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(r"train_state.npz was written by a run with other settings \(config hash "
                     r"[0-9a-f]{16} ≠ [0-9a-f]{16}\): sft.batch_size 4 → 8; "
                     r"sft.learning_rate 1e\+30 → 0.001$", err), err


def test_corrupt_training_state_is_refused(unfinished_run, tmp_path):
    out, _, (model, data_config, sft) = unfinished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / "train_state.npz").read_bytes()
    (copy / "train_state.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt training state"):
        train_sft(model, make_sentiment_data(data_config), sft, progress=False, out_dir=copy,
                  resume=True)


def test_user_data_checkpoint_refuses_a_changed_file(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(GOOD, {**GOOD, "chosen": "It is four."}))
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "ck"), "--steps", "0"]) == 0
    path.write_bytes(jsonl(GOOD))
    assert main(["measure", "--checkpoint", str(tmp_path / "ck"), "--pairs", "1"]) == 2
    assert "p.jsonl: the file changed since the checkpoint was trained on it" in \
        capsys.readouterr().err


def test_measure_data_with_a_checkpoint_of_other_data(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(GOOD, {**GOOD, "chosen": "It is four."}))
    assert main(["train", "--out", str(tmp_path / "ck"), "--steps", "0"]) == 0  # sentiment task
    argv = ["measure", "--checkpoint", str(tmp_path / "ck"), "--data", str(path), "--pairs", "1"]
    assert main(argv) == 2
    assert "trained on another vocabulary" in capsys.readouterr().err
    assert main(["measure", "--data", str(path), "--pairs", "5", "--steps", "0",
                 "--out", str(tmp_path / "r")]) == 2
    assert "holds only 2 usable pairs" in capsys.readouterr().err


def test_nan_stops_preference_training_naming_the_step(tiny_ckpt):
    from entangle_jax.train.preference import PreferenceConfig, train_preference
    config = PreferenceConfig(objective="dpo", learning_rate=1e30, steps=5, batch_size=4,
                              suffix_length=2, probe_every=0)
    with pytest.raises(NonFiniteError, match=r"^step [2-5]: (loss|log_probs|gradient|parameters) "
                                             r"is NaN or Inf"):
        train_preference(tiny_ckpt, config, progress=False)
