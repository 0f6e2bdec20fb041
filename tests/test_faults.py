"""Faults a new user hits, each fixed and kept fixed: outputs checked before any work, pair counts
settled before training, unfinished checkpoints named, one run per output directory, bad timeouts
and step sizes refused, strict JSON, options that would be ignored refused or noted, the verify
summary, the user's umask, and the per-field and split L = 0 rows of ``measure --data``."""

import fcntl
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from entangle_jax.checkpoint import load_checkpoint, save_checkpoint
from entangle_jax.cli import main

TINY = ["--batch-size", "4", "--width", "16", "--layers", "1", "--heads", "2"]
ROOT = Path(__file__).resolve().parents[1]

# A small preference file: an L = 0 pair with a shared prefix (twice: a duplicate), an L = 0 pair
# sharing nothing, an L = 1 pair and an L = 3 pair; a "src" field on all but the last.
RECORDS = [
    {"prompt": "What is 2 plus 2 ?", "chosen": "It is 4", "rejected": "It is 5", "src": "math"},
    {"prompt": "What is 2 plus 2 ?", "chosen": "It is 4", "rejected": "It is 5", "src": "math"},
    {"prompt": "Is the sky blue ?", "chosen": "Yes", "rejected": "No", "src": "facts"},
    {"prompt": "Capital of France ?", "chosen": "Paris .", "rejected": "Rome .", "src": "geo"},
    {"prompt": "Capital of Spain ?", "chosen": "Madrid is the capital .",
     "rejected": "Madrid is not the capital ."},
]


def one_error_line(capsys) -> str:
    """The one line on stderr (a progress bar, drawn before the refusal, aside)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines()
             if line.strip() and "%|" not in line]
    err = "\n".join(lines)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert err.startswith("entangle: error: "), err
    return err


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run each command in a fresh directory, so default outputs and caches stay out of the
    repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_work(monkeypatch):
    """Make every expensive step fail loudly: a command that reaches one did work before
    refusing."""
    import entangle_jax.bench
    import entangle_jax.dynamics_report
    import entangle_jax.figures.runner
    import entangle_jax.train.preference
    import entangle_jax.train.sft
    import entangle_jax.verify

    def forbidden(*args, **kwargs):
        raise AssertionError("the command started its work before checking its outputs")

    for module, name in [(entangle_jax.train.sft, "train_sft"), (entangle_jax.train.sft,
                                                                  "cached_sft"),
                         (entangle_jax.train.sft, "cached_sft_on"),
                         (entangle_jax.train.preference, "train_preference"),
                         (entangle_jax.verify, "run_verify"),
                         (entangle_jax.bench, "run_benchmark"),
                         (entangle_jax.dynamics_report, "one_step_report"),
                         (entangle_jax.figures.runner, "run_figure")]:
        monkeypatch.setattr(module, name, forbidden)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sentiment_ckpt(tmp_path_factory) -> Path:
    """``entangle train --steps 0`` on the sentiment task (a finished run)."""
    out = tmp_path_factory.mktemp("ck") / "sentiment"
    assert main(["train", "--out", str(out), "--steps", "0", *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def data_ckpt(tmp_path_factory, data_file) -> Path:
    out = tmp_path_factory.mktemp("ck") / "data"
    assert main(["train", "--data", str(data_file), "--out", str(out), "--steps", "0",
                 *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory, data_ckpt):
    """``entangle measure`` of the file's checkpoint with the default --pairs, --group-by src and
    a --seed that has nothing to do: (exit status, stdout, stderr, measure.json)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("measured")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["measure", "--checkpoint", str(data_ckpt), "--group-by", "src",
                     "--seed", "0", "--out", str(out)])
    report = json.loads((out / "measure.json").read_text()) if code == 0 else None
    return code, stdout.getvalue(), stderr.getvalue(), report


# ------------------------------------------------------------------------------------------------
# 1. Output paths are checked before any work
# ------------------------------------------------------------------------------------------------

COMMANDS_WITH_OUT = [
    ["measure", "--steps", "0", *TINY],
    ["train", "--steps", "0", *TINY],
    ["verify", "--quick"],
    ["dynamics", "--objective", "dpo"],
    ["bench", "--quick"],
    ["figures", "--quick", "--only", "3"],
]


@pytest.mark.parametrize("argv", COMMANDS_WITH_OUT, ids=[a[0] for a in COMMANDS_WITH_OUT])
def test_an_out_that_is_a_file_is_refused_before_any_work(argv, tmp_path, capsys, no_work):
    (tmp_path / "taken").write_text("not a directory")
    assert main([*argv, "--out", str(tmp_path / "taken")]) == 2
    err = one_error_line(capsys)
    assert f"cannot write to --out {tmp_path / 'taken'}: it is an existing file" in err


def test_an_out_under_a_file_is_refused(tmp_path, capsys, no_work):
    (tmp_path / "f").write_text("x")
    assert main(["measure", "--steps", "0", "--out", str(tmp_path / "f" / "reports")]) == 2
    assert f"{tmp_path / 'f'} is a file, not a directory" in one_error_line(capsys)


def test_a_report_name_taken_by_a_directory_is_refused(tmp_path, capsys, no_work):
    (tmp_path / "r" / "verify.json").mkdir(parents=True)
    assert main(["verify", "--quick", "--out", str(tmp_path / "r")]) == 2
    assert "verify.json is a directory" in one_error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_out_directory_is_refused(tmp_path, capsys, no_work):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["measure", "--steps", "0", "--out", str(tmp_path / "ro" / "sub")]) == 2
    assert "is not writable (permission denied)" in one_error_line(capsys)


@pytest.mark.skipif(os.access("/proc/sys", os.W_OK) or not os.path.isdir("/proc/sys"),
                    reason="needs a directory this user cannot write into")
def test_an_unwritable_out_directory_is_refused_even_for_root(capsys, no_work):
    """/proc/sys takes no new files, whoever asks (the root variant of a read-only directory)."""
    assert main(["measure", "--steps", "0", "--out", "/proc/sys/entangle-reports"]) == 2
    assert "/proc/sys is not writable (permission denied)" in one_error_line(capsys)


def test_preference_log_and_save_are_checked_before_training(tmp_path, sentiment_ckpt, capsys,
                                                             no_work):
    (tmp_path / "logdir").mkdir()
    (tmp_path / "file").write_text("x")
    base = ["train", "--objective", "dpo", "--checkpoint", str(sentiment_ckpt), "--steps", "1"]
    assert main([*base, "--log", str(tmp_path / "logdir")]) == 2
    assert "cannot write to --log" in one_error_line(capsys)
    assert main([*base, "--log", str(tmp_path / "l.jsonl"), "--save", str(tmp_path / "file")]) == 2
    assert "cannot write to --save" in one_error_line(capsys)
    assert not (tmp_path / "l.jsonl").exists()


# ------------------------------------------------------------------------------------------------
# 2. How many pairs, of how many
# ------------------------------------------------------------------------------------------------

def test_default_pairs_measure_a_small_file_whole(measured):
    code, out, err, report = measured
    assert code == 0, err
    assert "measured 5 of 5 records of" in out
    assert report["n_measured"] == 5 and report["n_records"] == 5


def test_pairs_all_and_more_records_than_64(sentiment_ckpt, tmp_path, capsys):
    """The default on a large set is 64 and says so; ``all`` is accepted."""
    argv = ["measure", "--checkpoint", str(sentiment_ckpt), "--suffix-lengths", "single"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "measure.json").read_text())
    assert (report["n_measured"], report["n_records"]) == (64, 800)
    assert "measured 64 of 800 eval statements" in capsys.readouterr().out
    # "all" parses (the 800 pairs are not measured here: a cap below that refuses is enough)
    from entangle_jax.cli import build_parser
    assert build_parser().parse_args(["measure", "--pairs", "all"]).pairs == "all"


def test_more_pairs_than_records_is_refused_before_training(data_file, tmp_path, capsys,
                                                            no_work):
    argv = ["measure", "--data", str(data_file), "--pairs", "9", "--steps", "0", *TINY,
            "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--pairs 9: " in (err := one_error_line(capsys)) and "holds only 5 usable pairs" in err


def test_duplicate_pairs_are_warned_about_and_counted(measured):
    code, _, err, report = measured
    assert "1 of 5 records of" in err and "repeat an earlier pair" in err and "p.jsonl:2" in err
    assert report["duplicate_pairs"]["in_file"] == 1
    assert report["duplicate_pairs"]["measured"] == 1
    assert report["duplicate_pairs"]["first"][0][0].endswith("p.jsonl:2")


# ------------------------------------------------------------------------------------------------
# 3. An unfinished checkpoint is named, with its real step
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def unfinished(tmp_path, tiny_ckpt) -> Path:
    """A checkpoint as an interrupted run leaves it: ``training`` step 3 of 10."""
    return save_checkpoint(tmp_path / "unfinished", tiny_ckpt,
                           training={"step": 3, "steps": 10})


def test_measuring_an_unfinished_checkpoint_warns_and_records_its_step(unfinished, tmp_path,
                                                                      capsys):
    assert load_checkpoint(unfinished).training == {"step": 3, "steps": 10}
    assert main(["measure", "--checkpoint", str(unfinished), "--pairs", "2",
                 "--suffix-lengths", "single", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert f"{unfinished} holds an unfinished run: trained 3 of 10 steps" in err
    report = json.loads((tmp_path / "r" / "measure.json").read_text())
    assert report["checkpoint"] == str(unfinished)
    assert report["checkpoint_training"] == {"step": 3, "steps": 10, "finished": False}


def test_dynamics_records_the_checkpoint_step(unfinished, tmp_path, capsys):
    assert main(["dynamics", "--checkpoint", str(unfinished), "--objective", "dpo", "--shape",
                 "single", "--pairs", "2", "--halvings", "0", "--out", str(tmp_path / "d")]) == 0
    assert "holds an unfinished run" in capsys.readouterr().err
    report = json.loads((tmp_path / "d" / "dynamics.json").read_text())
    assert report["checkpoint"] == str(unfinished)
    assert report["checkpoint_training"] == {"step": 3, "steps": 10, "finished": False}


# ------------------------------------------------------------------------------------------------
# 4. One run per output directory
# ------------------------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import fcntl, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0); f.truncate(); f.write("4242\\n"); f.flush()
    print("locked", flush=True)
    time.sleep(120)
""")


def lock_is_free(directory: Path) -> bool:
    with open(directory / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_a_second_run_on_the_same_out_is_refused(sentiment_ckpt, tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["measure", "--checkpoint", str(sentiment_ckpt), "--pairs", "2",
                "--suffix-lengths", "single", "--out", str(out)]
        assert main(argv) == 2
        err = one_error_line(capsys)
        assert f"--out {out} is in use" in err and "process 4242" in err
        assert not (out / "measure.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the stale lock file does not block a later run
    assert (out / "measure.json").exists() and lock_is_free(out)


@pytest.mark.parametrize("raised, status", [(KeyboardInterrupt, 130),
                                            (FileNotFoundError, 2)])
def test_the_lock_is_released_on_ctrl_c_and_errors(sentiment_ckpt, tmp_path, monkeypatch,
                                                   raised, status):
    import entangle_jax.measure

    seen = []

    def interrupted(*args, **kwargs):
        seen.append(lock_is_free(tmp_path / "o"))  # held while the run works
        raise raised("stop")

    monkeypatch.setattr(entangle_jax.measure, "measure", interrupted)
    assert main(["measure", "--checkpoint", str(sentiment_ckpt), "--out",
                 str(tmp_path / "o")]) == status
    assert seen == [False] and lock_is_free(tmp_path / "o")


# ------------------------------------------------------------------------------------------------
# 5. Bad timeouts and step sizes; strict JSON
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_bench_refuses_a_timeout_that_is_not_positive(value, capsys, no_work):
    assert main(["bench", "--quick", "--timeout", value]) == 2
    assert "--timeout" in one_error_line(capsys)


def test_bench_exits_1_when_every_case_fails(tmp_path, capsys):
    assert main(["bench", "--quick", "--timeout", "0.001", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "every one of the" in err and "timed out" in err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    assert rows and all("error" in r for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "1e30"], "out of range: a step size must lie in (0, 1e+06]"),
    (["--adam-lr", "1e30"], "out of range"),
    (["--lr", "nan"], "must be a finite number > 0"),
])
def test_dynamics_refuses_step_sizes_out_of_range(argv, message, capsys, no_work):
    assert main(["dynamics", "--objective", "dpo", *argv]) == 2
    assert message in one_error_line(capsys)


def test_dynamics_refuses_a_step_whose_change_is_not_finite(sentiment_ckpt, tmp_path, capsys):
    """In float32 an η set by a huge --target-change overflows: the rows would be NaN."""
    argv = ["dynamics", "--checkpoint", str(sentiment_ckpt), "--objective", "dpo", "--shape",
            "single", "--pairs", "2", "--halvings", "0", "--float32", "--target-change", "1e30",
            "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "gives non-finite log-probs (dpo, single)" in err and "--target-change" in err
    assert not (tmp_path / "d" / "dynamics.json").exists()


def test_the_finite_check_catches_a_real_nan_report(tiny_ckpt):
    from entangle_jax.cli import UsageError, build_parser
    from entangle_jax.cli.dynamics import check_steps_finite
    from entangle_jax.dynamics_report import one_step_report
    from entangle_jax.objectives import get_objective

    report = one_step_report(tiny_ckpt, [get_objective("dpo")], [0], n_pairs=2, lr=1e30,
                             halvings=0, float64=False)
    assert any(not math.isfinite(v) for v in report["results"][0]["pairs"]["actual_w"])
    args = build_parser().parse_args(["dynamics", "--lr", "1e6"])
    with pytest.raises(UsageError, match=r"η = 1e\+30 gives non-finite log-probs .*--lr"):
        check_steps_finite(report, args)
    fine = one_step_report(tiny_ckpt, [get_objective("dpo")], [0], n_pairs=2, halvings=0)
    check_steps_finite(fine, args)  # NaN cross terms of the Adam row are not a fault


def strict(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_reports_are_strict_json_with_null_for_non_finite(tmp_path):
    from entangle_jax.io import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"nan": float("nan"), "inf": [1.0, float("inf")],
                                             "np": np.float32("-inf"), "arr": np.array([np.nan]),
                                             "ok": 0.5})
    assert strict((tmp_path / "r.json").read_text()) == {"nan": None, "inf": [1.0, None],
                                                          "np": None, "arr": [None], "ok": 0.5}


def test_dynamics_json_is_strict(sentiment_ckpt, tmp_path):
    """Adam's cross terms are NaN by design: written as null."""
    assert main(["dynamics", "--checkpoint", str(sentiment_ckpt), "--objective", "dpo",
                 "--shape", "single", "--pairs", "2", "--halvings", "0",
                 "--out", str(tmp_path / "d")]) == 0
    report = strict((tmp_path / "d" / "dynamics.json").read_text())
    assert report["results"][0]["batch_adam"]["mean_cross_w"] is None


# ------------------------------------------------------------------------------------------------
# 6. Options that would be ignored
# ------------------------------------------------------------------------------------------------

REFUSED = [
    (["measure", "--checkpoint", "{ck}", "--layers", "2", "--width", "32"],
     "--layers, --width do not apply with --checkpoint"),
    (["measure", "--checkpoint", "{ck}", "--token-grams", "2"], "--token-grams does not apply"),
    (["measure", "--checkpoint", "{ck}", "--group-by", "src"], "--group-by does not apply"),
    (["measure", "--checkpoint", "{ck}", "--skip-bad-lines"],
     "--skip-bad-lines does not apply without --data"),
    (["train", "--steps", "0", "--shape", "long"],
     "--shape does not apply to supervised fine-tuning"),
    (["train", "--steps", "0", "--save", "x"], "--save does not apply"),
    (["train", "--steps", "0", "--vocab-size", "100"], "--vocab-size does not apply without"),
    (["train", "--data", "{data}", "--steps", "0", "--suffix", "fixed"],
     "--suffix does not apply with --data"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--hparam", "beta=0.1",
      "--hparam", "beta=0.2"], "--hparam beta is given twice"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--layers", "2"],
     "--layers does not apply with --objective"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--out", "o"],
     "--out does not apply with --objective"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--mask-l1", "0.1"],
     "--mask-l1 does not apply without --mitigation token_mask"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--balanced"],
     "--balanced does not apply without --mitigation normalized"),
    (["train", "--objective", "dpo", "--checkpoint", "{ck}", "--probe-every", "0",
      "--probe-size", "8"], "--probe-size does not apply with --probe-every 0"),
    (["dynamics", "--checkpoint", "{ck}", "--objective", "dpo", "--hparam", "beta=1",
      "--hparam", "beta=2"], "--hparam beta is given twice"),
    (["dynamics", "--checkpoint", "{ck}", "--lr", "0.1", "--target-change", "0.2"],
     "--target-change does not apply with --lr"),
    (["dynamics", "--checkpoint", "{ck}", "--normalized", "--adam-lr", "0.001"],
     "--adam-lr does not apply with --normalized"),
    (["dynamics", "--checkpoint", "{ck}", "--max-prompt-tokens", "8"],
     "--max-prompt-tokens does not apply without --data"),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=[" ".join(r[0][:1] + r[0][-2:])
                                                         for r in REFUSED])
def test_options_that_would_be_ignored_are_refused(argv, message, sentiment_ckpt, data_file,
                                                   capsys, no_work):
    argv = [a.format(ck=sentiment_ckpt, data=data_file) for a in argv]
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_probe_size_beyond_the_probe_set_and_shape_with_data_are_noted(data_ckpt, tmp_path,
                                                                      capsys):
    assert main(["train", "--objective", "dpo", "--checkpoint", str(data_ckpt), "--steps", "1",
                 "--batch-size", "2", "--probe-every", "1", "--probe-size", "50", "--shape",
                 "short", "--log", str(tmp_path / "dpo.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "note: --probe-size 50 is more than the 5 pairs of the training set" in err
    assert "note: --shape short is not used: the pairs are those of the data file" in err


def test_a_seed_with_nothing_to_draw_is_noted(measured):
    """Every pair of the file is measured and the checkpoint is not trained: --seed does
    nothing."""
    _, _, err, _ = measured
    assert "note: --seed 0 is not used: all 5 pairs are measured" in err


def test_figures_list_notes_the_options_it_does_not_use(capsys):
    assert main(["figures", "--list", "--gallery", "g", "--quick"]) == 0
    assert "note: --quick, --gallery are not used: --list only lists" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# 7. The verify summary and the documented exit statuses
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def verify_report(tmp_path_factory):
    """A real verify report of one claim on tiny, untrained models (the settings of
    tests/test_verify_cli.py)."""
    from test_verify_cli import TINY as SETTINGS

    from entangle_jax.verify import run_verify, select_claims
    return run_verify(SETTINGS, select_claims(["output_layer_identity"]),
                      cache_dir=tmp_path_factory.mktemp("models"), progress=False,
                      log=lambda line: None)


@pytest.mark.parametrize("verdict", ["HOLDS", "FAILS"])
def test_verify_ends_with_a_one_line_summary(verify_report, verdict, tmp_path, monkeypatch,
                                             capsys):
    import copy

    import entangle_jax.verify
    report = copy.deepcopy(verify_report)
    report["claims"][0]["headline_verdict"] = verdict
    monkeypatch.setattr(entangle_jax.verify, "run_verify", lambda *a, **k: report)
    status = main(["verify", "--only", "output_layer_identity", "--out", str(tmp_path / "r")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    if verdict == "HOLDS":
        assert status == 0
        assert last == f"verify: all 1 claim(s) hold in their own regime; report: " \
                       f"{tmp_path / 'r' / 'verify.md'} (exit status 0)"
    else:
        assert status == 1
        assert last.startswith("verify: 1 of 1 claim(s) do not hold in their own regime: "
                               "output_layer_identity (FAILS in uncertain_sft); report: ")
        assert "docs/verification.md" in last and "exit status 1" in last


def test_the_documented_exit_statuses_are_those_make_and_entangle_give():
    """GNU make exits 2 when a recipe fails, whatever its status: README and --help say so."""
    readme = (ROOT / "README.md").read_text()
    assert "`make verify` exits with status 1" not in readme
    assert "make's own status 2" in readme
    help_text = subprocess.run([sys.executable, "-m", "entangle_jax", "verify", "--help"],
                               capture_output=True, text=True).stdout
    assert "exits 2 itself" in " ".join(help_text.split())
    makefile = (ROOT / "Makefile").read_text()
    assert "summary" in makefile.split("verify:")[0].rsplit("\n\n", 1)[-1]


# ------------------------------------------------------------------------------------------------
# 8. Files get the user's umask
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    from entangle_jax.io import atomic_write_json, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.md", "x")
        atomic_write_json(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.md").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------------------------------------
# 9. --group-by, and the L = 0 row split by a shared prefix
# ------------------------------------------------------------------------------------------------

def test_group_by_gives_one_row_per_value(measured):
    code, out, _, report = measured
    rows = report["groups_by_field"]["rows"]
    assert report["groups_by_field"]["field"] == "src"
    assert [(r["value"], r["n_pairs"]) for r in rows] == [("facts", 1), ("geo", 1), ("math", 2),
                                                          (None, 1)]
    pairs = [p for r in report["results"] for p in r["pairs"]]
    for row in rows:
        inner = [p["inner"] for p in pairs if p["fields"].get("src") == row["value"]]
        np.testing.assert_allclose(row["summary"]["inner"]["mean"], np.mean(inner), rtol=1e-12)
    assert "| src | pairs |" in out and "| math | 2 |" in out and "| (missing) | 1 |" in out


def test_the_l0_row_is_split_by_a_shared_prefix(measured):
    _, out, _, report = measured
    rows = {r["label"]: r for r in report["results"]}
    assert list(rows) == ["0 (no shared part)", "0 (shared prefix)", "1", "3"]
    assert [p["chosen"] for p in rows["0 (no shared part)"]["pairs"]] == ["Yes"]
    assert [p["chosen"] for p in rows["0 (shared prefix)"]["pairs"]] == ["It is 4", "It is 4"]
    for label, row in rows.items():
        assert all(p["diff"]["suffix"] == row["suffix_length"] for p in row["pairs"])
        if row["suffix_length"] == 0:
            assert all((p["diff"]["prefix"] > 0) == row["shared_prefix"] for p in row["pairs"])
    assert "| 0 (shared prefix) | 2 |" in out and "| 0 (no shared part) | 1 |" in out


def test_group_by_an_unknown_field_is_refused_before_training(data_file, tmp_path, capsys,
                                                              no_work):
    assert main(["measure", "--data", str(data_file), "--group-by", "topic", "--steps", "0",
                 *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "--group-by topic: no record of" in (err := one_error_line(capsys))
    assert "their fields: src" in err
