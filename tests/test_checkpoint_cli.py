import json
import subprocess
import sys

import numpy as np
import pytest

from entangle_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from entangle_jax.cli import main
from entangle_jax.logprob import batch_sequence_logprobs


def test_checkpoint_round_trip_gives_identical_logprobs(tmp_path, tiny_ckpt, make_pairs):
    save_checkpoint(tmp_path / "ck", tiny_ckpt)
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.tokenizer == tiny_ckpt.tokenizer and loaded.model_config == tiny_ckpt.model_config
    assert loaded.sft_config == tiny_ckpt.sft_config
    pairs = make_pairs(6)
    a = batch_sequence_logprobs(tiny_ckpt.graphdef, tiny_ckpt.params, pairs.chosen)
    b = batch_sequence_logprobs(loaded.graphdef, loaded.params, pairs.chosen)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not list(tmp_path.glob("ck/.*tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("damage", ["truncate_params", "garbage_config", "wrong_vocab", "missing"])
def test_corrupt_checkpoints_raise_a_checkpoint_error(tmp_path, tiny_ckpt, damage):
    directory = save_checkpoint(tmp_path / "ck", tiny_ckpt)
    if damage == "truncate_params":
        data = (directory / "params.npz").read_bytes()
        (directory / "params.npz").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_config":
        (directory / "config.json").write_bytes(b"{not json")
    elif damage == "wrong_vocab":
        meta = json.loads((directory / "config.json").read_text())
        meta["tokenizer"]["words"] = meta["tokenizer"]["words"][:-1]
        (directory / "config.json").write_text(json.dumps(meta))
    else:
        (directory / "params.npz").unlink()
    with pytest.raises(CheckpointError):
        load_checkpoint(directory)


TINY = ["--steps", "3", "--batch-size", "8", "--width", "16", "--layers", "1", "--heads", "2"]


def test_cli_train_then_measure_writes_the_documented_contract(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "ck"), *TINY]) == 0
    assert main(["measure", "--checkpoint", str(tmp_path / "ck"), "--pairs", "3",
                 "--suffix-lengths", "single,2", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| L |" in out
    report = json.loads((tmp_path / "rep" / "measure.json").read_text())
    assert [r["suffix_length"] for r in report["results"]] == [0, 2]
    pair = report["results"][1]["pairs"][0]
    for key in ("logp_w", "logp_l", "sq_norm_w", "sq_norm_l", "inner", "cosine", "token_gram",
                "groups"):
        assert key in pair
    gram = np.array(pair["token_gram"])
    assert gram.shape == (3, 3)
    np.testing.assert_allclose(gram.sum(), pair["inner"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(sum(pair["groups"].values()), pair["inner"], rtol=1e-3, atol=1e-3)
    assert report["config"]["n_pairs"] == 3


@pytest.mark.parametrize("argv, message", [
    (["measure", "--suffix-lengths", "tiny"], "neither an integer nor a shape"),
    (["measure", "--suffix-lengths", "-1"], "out of range"),
    (["measure", "--pairs", "0"], "must be a positive integer"),
    (["measure", "--checkpoint", "/no/such/dir"], "no checkpoint"),
    (["train", "--label-flip", "1.5"], "label_flip"),
    (["train", "--width", "10", "--heads", "3"], "n_heads"),
])
def test_bad_values_give_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_checkpoint_on_the_command_line(tmp_path, tiny_ckpt):
    directory = save_checkpoint(tmp_path / "ck", tiny_ckpt)
    (directory / "params.npz").write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, "-m", "entangle_jax", "measure", "--checkpoint",
                           str(directory)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "corrupt parameter file" in proc.stderr and "Traceback" not in proc.stderr


def test_every_command_has_help():
    proc = subprocess.run([sys.executable, "-m", "entangle_jax", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0
    from entangle_jax.cli import COMMANDS
    for name in COMMANDS:
        sub = subprocess.run([sys.executable, "-m", "entangle_jax", name, "--help"],
                             capture_output=True, text=True)
        assert sub.returncode == 0 and "usage" in sub.stdout
