"""Same command, same seed → byte-identical JSON; a training run killed mid-way and resumed with
``--resume`` ends with the same parameters, optimizer state and metrics log as one never killed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from entangle_jax.config import ModelConfig, SFTConfig
from entangle_jax.data.userdata import load_user_data
from entangle_jax.provenance import json_hash
from entangle_jax.train.sft import _kept_metrics, saved_progress, train_sft

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pairs.jsonl"
TINY = ["--batch-size", "8", "--width", "16", "--layers", "1", "--heads", "2"]


def entangle(*args, cwd, compile_cache: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if compile_cache is not None:  # reuse XLA executables across processes (saves compile time)
        env |= {"JAX_COMPILATION_CACHE_DIR": str(compile_cache),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return subprocess.Popen([sys.executable, "-m", "entangle_jax", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def test_same_command_twice_gives_byte_identical_json(tmp_path):
    """Two fresh processes (each compiles anew) measure the same checkpoint of the example file."""
    data = load_user_data(EXAMPLE)
    train_sft(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32), data, SFTConfig(steps=0),
              out_dir=tmp_path / "ck", progress=False)
    command = ["measure", "--checkpoint", str(tmp_path / "ck"), "--pairs", "6", "--seed", "3",
               "--out", "rep"]
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for cwd in runs:
        cwd.mkdir()
        procs.append(entangle(*command, cwd=cwd))
    for proc in procs:
        finish(proc)
    a, b = ((cwd / "rep" / "measure.json").read_bytes() for cwd in runs)
    assert a == b
    assert (runs[0] / "rep" / "measure.md").read_bytes() == \
        (runs[1] / "rep" / "measure.md").read_bytes()
    report = json.loads(a)
    assert report["config"]["seed"] == 3 and report["config"]["n_pairs"] == 6
    assert report["provenance"]["config_hash"] == json_hash(report["config"])
    assert set(report["provenance"]["versions"]) >= {"python", "jax", "jaxlib", "flax", "optax",
                                                     "numpy"}
    assert report["config"]["data"]["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    args = ["train", "--data", str(EXAMPLE), "--steps", "200", "--checkpoint-every", "20", *TINY]
    cache = tmp_path / "xla"
    finish(entangle(*args, "--out", "whole", cwd=tmp_path, compile_cache=cache))
    killed = entangle(*args, "--out", "killed", cwd=tmp_path, compile_cache=cache)
    run, deadline = tmp_path / "killed", time.monotonic() + 240
    while True:  # kill once a checkpoint exists and the log has run past it
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        saved = saved_progress(run) if (run / "train_state.npz").exists() else None
        text = (run / "metrics.jsonl").read_text() if saved else ""
        lines = text[:text.rfind("\n") + 1].splitlines()  # complete lines only
        if saved and saved[0] >= 20 and lines and json.loads(lines[-1])["step"] > saved[0]:
            break
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step_at_kill = saved_progress(run)[0]
    assert 20 <= step_at_kill < 200
    finish(entangle(*args, "--out", "killed", "--resume", cwd=tmp_path, compile_cache=cache))
    a, b = _npz(tmp_path / "whole" / "train_state.npz"), _npz(tmp_path / "killed" /
                                                              "train_state.npz")
    assert a.keys() == b.keys() and any(k.startswith("opt/") for k in a)
    for key in a:  # parameters, optimizer state and the metadata (step, RNG state, configs)
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    x, y = _npz(tmp_path / "whole" / "params.npz"), _npz(tmp_path / "killed" / "params.npz")
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    for name in ("metrics.jsonl", "config.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes()
    assert len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()) == 200


def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": k, "loss": 1.0 / k}) + "\n" for k in range(1, 8)]
    log.write_text("".join(lines) + '{"step": 8, "lo')  # killed in the middle of a line
    assert _kept_metrics(log, 5) == "".join(lines[:5])
    assert _kept_metrics(log, 7) == "".join(lines)
    assert _kept_metrics(log, 100) == "".join(lines)
    assert _kept_metrics(tmp_path / "none.jsonl", 3) == ""


def test_a_cached_model_is_keyed_by_configs_versions_and_code(tmp_path, monkeypatch):
    from entangle_jax import provenance
    from entangle_jax.train import sft

    model = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    data = load_user_data(EXAMPLE)
    config = SFTConfig(steps=1, batch_size=4)
    first = sft.cached_sft_on(model, data, config, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 1
    sft.cached_sft_on(model, data, config, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 1  # reused
    keys = {provenance.cache_key(model, config)}
    monkeypatch.setattr(provenance, "code_fingerprint", lambda: "other code")
    keys.add(provenance.cache_key(model, config))
    again = sft.cached_sft_on(model, data, config, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2  # other code: trained again, not reused
    monkeypatch.setattr(provenance, "package_versions", lambda: {"jax": "0.0"})
    keys.add(provenance.cache_key(model, config))
    assert len(keys) == 3
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # deterministic retraining


def test_the_source_fingerprint_follows_every_python_file(tmp_path):
    from entangle_jax.provenance import source_fingerprint

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    seen = {source_fingerprint(tmp_path)}
    (tmp_path / "notes.txt").write_text("not code")
    assert source_fingerprint(tmp_path) in seen  # only Python files count
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    seen.add(source_fingerprint(tmp_path))
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")
    seen.add(source_fingerprint(tmp_path))
    assert len(seen) == 3  # an edit and a rename each change it
