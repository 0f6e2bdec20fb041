"""Every figure script runs on a tiny configuration and writes a PNG, a PDF and a CSV whose numbers
are the run's: the preference logs (JSONL), the stored results, and independent recomputations
(closed forms, a direct gradient computation)."""

import dataclasses
import json
import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

from entangle_jax.cli import main
from entangle_jax.config import ConfigError
from entangle_jax.data import make_sentiment_data, response_window, sentiment_pairs
from entangle_jax.figures import sources, style
from entangle_jax.figures.context import FigureContext
from entangle_jax.figures.runner import discover, load, run_figure, select
from entangle_jax.figures.tables import read_csv
from entangle_jax.gradients import pair_geometry
from entangle_jax.train.preference import read_log

STEMS = list(select(discover(), None))
#: The real-model twins (``entangle figures --real``): figure 8 has no tiny form.
REAL_STEMS = list(select(discover(), None, real=True))


def _tiny(stem: str, config):
    """The ``--quick`` configuration, trimmed further where a figure repeats the same work: two
    regimes for figure 2, two objectives for figure 5, no middle snapshot for figure 4."""
    if stem.startswith("fig2"):
        s = config.settings
        regimes = tuple(r for r in s.regimes if r.name in ("random_init", "pretrained"))
        return dataclasses.replace(config, settings=dataclasses.replace(s, regimes=regimes))
    if stem.startswith("fig5"):
        return dataclasses.replace(config, runs=tuple(r for r in config.runs
                                                      if r.objective in ("dpo", "cpo")))
    if stem.startswith("fig4"):
        return dataclasses.replace(config, snapshots=(0, config.snapshots[-1]))
    return config


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    """``{stem: (module, config, output, results, rows)}`` for every figure, run once."""
    root = tmp_path_factory.mktemp("figures")
    ctx = FigureContext(out_dir=root / "out", cache_dir=root / "cache", quick=True,
                        progress=False)
    out = {}
    for stem, path in select(discover(), None).items():
        module = load(path)
        config = _tiny(stem, module.config(True))
        output = run_figure(module, ctx, config)
        results = json.loads((ctx.run_dir(stem, config) / "results.json").read_text())
        out[stem] = (module, config, output, results, read_csv(output.paths[2]))
    return out, ctx


def _figure(figures, prefix):
    return next(v for k, v in figures[0].items() if k.startswith(prefix))


@pytest.mark.parametrize("stem", STEMS)
def test_each_figure_writes_png_pdf_and_csv(figures, stem):
    _, _, output, _, rows = figures[0][stem]
    png, pdf, csv = output.paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    assert csv.stat().st_size > 0 and len(rows) > 0


@pytest.mark.parametrize("stem", STEMS)
def test_chosen_is_blue_and_rejected_vermillion_everywhere(figures, stem):
    module, config, _, results, _ = figures[0][stem]
    fig, _ = module.plot(results, config)
    seen = 0
    for ax in fig.axes:
        for artist in [*ax.get_lines(), *ax.collections]:
            label = str(artist.get_label())
            for word, color in (("chosen", style.CHOSEN), ("rejected", style.REJECTED)):
                if label.startswith(word):
                    drawn = (artist.get_edgecolor()[0] if isinstance(artist, PathCollection)
                             else artist.get_color())
                    assert np.allclose(np.asarray(drawn)[:3] if not isinstance(drawn, str)
                                       else _rgb(drawn), _rgb(color)), (stem, label)
                    seen += 1
    assert seen > 0 or stem.startswith(("fig2", "fig3", "fig4"))


def _rgb(color):
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color))


def _train_log(path):
    return [r for r in read_log(path) if r["kind"] == "train"]


def test_fig1_curves_are_the_training_logs(figures):
    _, config, _, results, rows = _figure(figures, "fig1")
    for shape, run in config.runs:
        log = read_log(results["runs"][shape]["log"])
        train = [r for r in log if r["kind"] == "train"]
        mine = [r for r in rows if r["shape"] == shape and r["source"] == "train batch"]
        assert [r["step"] for r in mine] == [r["step"] for r in train] == list(
            range(1, run.steps + 1))
        beta = run.make_objective().beta
        for row, rec in zip(mine, train):
            assert row["change_chosen"] == pytest.approx(rec["rewards/chosen"] / beta, rel=1e-12)
            assert row["change_rejected"] == pytest.approx(rec["rewards/rejected"] / beta,
                                                           rel=1e-12)
            assert row["logp_chosen"] == rec["logps/chosen"]
        # before the first update the policy is the reference: no change yet
        assert abs(mine[0]["change_chosen"]) < 1e-4 and abs(mine[0]["change_rejected"]) < 1e-4
        probes = [r for r in log if r["kind"] == "probe"]
        probe_rows = [r for r in rows if r["shape"] == shape and r["source"] == "probe set"]
        assert [r["logp_rejected"] for r in probe_rows] == [
            r["probe/logps/rejected"] for r in probes]


def test_fig2_means_match_the_runs_and_a_direct_gradient_computation(figures):
    _, config, _, results, rows = _figure(figures, "fig2")
    s = config.settings
    for row in rows:
        seeds = [r for r in results["records"]
                 if r["regime"] == row["regime"] and r["suffix_length"] == row["suffix_length"]]
        assert len(seeds) == row["n_seeds"] == len(s.seeds)
        for q in ("inner", "sq_norm_w", "sq_norm_l", "cosine"):
            values = [r[q] for r in seeds]
            assert row[q] == pytest.approx(np.mean(values), rel=1e-12)
            half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(
                len(values))
            assert row[f"{q}_ci_hi"] - row[q] == pytest.approx(half, rel=1e-9, abs=1e-12)
    # the stored per-seed mean, recomputed in float32 straight from the gradients
    ctx = figures[1]
    ckpt = sources.checkpoint(s, "pretrained", s.seeds[0], ctx)
    data = make_sentiment_data(s.data_config(s.seeds[0]))
    pairs = sentiment_pairs(data.eval[:s.n_pairs], data.vocab, 2, ckpt.model_config.max_len,
                            response_window(data.config))
    geo = pair_geometry(ckpt.graphdef, ckpt.params, pairs)
    stored = next(r for r in results["records"] if r["regime"] == "pretrained"
                  and r["seed"] == s.seeds[0] and r["suffix_length"] == 2)
    assert stored["inner"] == pytest.approx(float(np.mean(geo.inner)), rel=1e-3)
    assert stored["sq_norm_w"] == pytest.approx(float(np.mean(geo.sq_norm_w)), rel=1e-3)


def test_fig3_token_gram_sums_to_the_sequence_inner_product(figures):
    _, _, _, results, rows = _figure(figures, "fig3")
    n = results["suffix_length"] + 1
    for panel in ("cross", "mean_cross", "chosen", "rejected"):
        mine = [r for r in rows if r["panel"] == panel]
        assert len(mine) == n * n
        matrix = np.zeros((n, n))
        for r in mine:
            matrix[int(r["i"]), int(r["j"])] = r["value"]
        np.testing.assert_array_equal(matrix, np.asarray(results[panel]))
    cross = sum(r["value"] for r in rows if r["panel"] == "cross")
    # Σ_ij ⟨g_w^i, g_l^j⟩ against ⟨g_w, g_l⟩ from whole-sequence gradients (float64)
    assert cross == pytest.approx(results["inner"], rel=1e-8)
    chosen = np.asarray(results["chosen"])
    np.testing.assert_allclose(chosen, chosen.T, rtol=1e-10)


def test_fig4_points_follow_the_gradient_condition(figures):
    _, config, _, _, rows = _figure(figures, "fig4")
    beta = config.runs[0][1].make_objective().beta
    for r in rows:
        if r["step"] == 0:  # policy = reference: DPO's d_w = d_l = β σ(0)
            assert r["d_w"] == pytest.approx(beta / 2) and r["d_l"] == pytest.approx(beta / 2)
        assert r["x"] == pytest.approx(r["d_l"] * r["inner"] / (r["d_w"] * r["sq_norm_w"]),
                                       rel=1e-9)
        assert r["y"] == pytest.approx(r["d_w"] * r["inner"] / (r["d_l"] * r["sq_norm_l"]),
                                       rel=1e-9)
        assert r["x"] * r["y"] <= 1 + 1e-5  # = cos², Cauchy–Schwarz
        expected = 1 if r["x"] < 1 and r["y"] < 1 else 2 if r["x"] > 1 else 3
        assert r["case"] == expected


def test_fig5_curves_and_weights_are_the_logs(figures):
    _, config, _, results, rows = _figure(figures, "fig5")
    for run in config.runs:
        train = _train_log(results["runs"][run.objective]["log"])
        mine = [r for r in rows if r["objective"] == run.objective]
        assert len(mine) == len(train) == run.steps
        for row, rec in zip(mine, train):
            assert row["d_w"] == rec["weights/d_w"] and row["d_l"] == rec["weights/d_l"]
            assert row["change_chosen"] == pytest.approx(
                rec["rewards/chosen"] / run.make_objective().beta, rel=1e-12)
    dpo = next(r for r in rows if r["objective"] == "dpo")
    assert dpo["d_w"] == pytest.approx(0.05, rel=1e-5) and dpo["d_l"] == pytest.approx(0.05,
                                                                                      rel=1e-5)


def test_fig6_curves_and_mask_are_the_logs(figures):
    _, config, _, results, rows = _figure(figures, "fig6")
    for run in config.runs:
        log = read_log(results["runs"][run.mitigation]["log"])
        train = [r for r in log if r["kind"] == "train"]
        mine = [r for r in rows if r["method"] == run.mitigation and r["source"] == "train batch"]
        assert [r["change_rejected"] for r in mine] == pytest.approx(
            [r["rewards/rejected"] / run.make_objective().beta for r in train], rel=1e-12)
        if run.mitigation == "token_mask":
            probes = [r for r in log if r["kind"] == "probe"]
            for probe in probes:
                mask = [r["mask_weight"] for r in rows
                        if r["source"] == "mask weight" and r["step"] == probe["step"]]
                assert mask == pytest.approx(probe["mask/weights"][:run.suffix_length + 1],
                                             rel=1e-6)
                assert all(0.0 <= m <= 1.0 for m in mask)


def test_fig7_predictions_are_the_closed_form_and_the_slope_is_the_fit(figures):
    _, _, _, results, rows = _figure(figures, "fig7")
    for result in results["results"]:
        p, lr = result["pairs"], result["one_step"]["lr"]
        d_w, d_l = np.asarray(p["d_w"]), np.asarray(p["d_l"])
        sq_w, sq_l, inner = (np.asarray(p[k]) for k in ("sq_norm_w", "sq_norm_l", "inner"))
        mine = [r for r in rows if r["kind"] == "step" and r["shape"] == result["shape"]]
        chosen = np.asarray([r["predicted"] for r in mine if r["response"] == "chosen"])
        rejected = np.asarray([r["predicted"] for r in mine if r["response"] == "rejected"])
        # the first-order rates ⟨g, u⟩ of the real update against η (d_w‖g_w‖² − d_l⟨g_w,g_l⟩)
        np.testing.assert_allclose(chosen, lr * (d_w * sq_w - d_l * inner), rtol=1e-6)
        np.testing.assert_allclose(rejected, lr * (d_w * inner - d_l * sq_l), rtol=1e-6)
        errors = [r for r in rows if r["kind"] == "error" and r["shape"] == result["shape"]]
        slope = np.polyfit(np.log([r["lr"] for r in errors]),
                           np.log([r["mean_error"] for r in errors]), 1)[0]
        assert errors[0]["fitted_slope"] == pytest.approx(slope, rel=1e-9)


def test_select_names_figures_by_number_prefix_or_stem():
    scripts = discover()
    assert list(select(scripts, "3,1")) == [STEMS[0], STEMS[2]]
    assert list(select(scripts, "fig7")) == [STEMS[-1]]
    assert list(select(scripts, STEMS[1])) == [STEMS[1]]
    with pytest.raises(ConfigError, match="names no figure"):
        select(scripts, "9")
    assert [stem.split("_")[0] for stem in REAL_STEMS] == ["fig1", "fig2", "fig3", "fig8"]
    assert "fig8" not in {stem.split("_")[0] for stem in STEMS}
    with pytest.raises(ConfigError, match="names no figure with a real-model twin"):
        select(scripts, "7", real=True)


@pytest.mark.slow
def test_real_model_twins_run_end_to_end(tmp_path):
    """``entangle figures --real --quick``: SmolLM2 as shipped, 2 DPO steps on 2 real pairs with
    probes, 2 sentiment pairs at L ≤ 2 (about 3 min on 2 cores)."""
    out = tmp_path / "out"
    assert main(["figures", "--real", "--quick", "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    summary = json.loads((out / "figures_smollm2.json").read_text())
    assert summary["real"] and list(summary["figures"]) == [f"{s}_smollm2" for s in REAL_STEMS]
    for stem in summary["figures"]:
        assert (out / f"{stem}.png").stat().st_size > 10_000
    gram = read_csv(out / f"{REAL_STEMS[2]}_smollm2.csv")
    tokens = {r["i"]: r["row_token"] for r in gram if r["panel"] == "chosen"}
    assert [tokens[i] for i in sorted(tokens)][1:] == ["sentiment", "."]  # SmolLM2's own tokens
    assert tokens[0] in ("Positive", "Negative")


def test_cli_reuses_the_cached_run_and_reports_bad_input(figures, tmp_path, capsys):
    ctx = figures[1]
    out = tmp_path / "out"
    assert main(["figures", "--only", "3", "--quick", "--out", str(out), "--cache-dir",
                 str(ctx.cache_dir)]) == 0
    summary = json.loads((out / "figures.json").read_text())
    assert list(summary["figures"]) == [STEMS[2]] and (out / f"{STEMS[2]}.png").exists()
    assert main(["figures", "--only", "nine"]) == 2
    assert "names no figure" in capsys.readouterr().err


def test_the_figures_are_modules_of_the_installed_package():
    """``entangle figures`` needs no source checkout: every figure is a module of a package that
    the build's package list holds, and each ``figures/`` script runs one of them."""
    from pathlib import Path

    import entangle_jax
    from entangle_jax.figures import paper

    # pyproject's [tool.setuptools.packages.find] takes every package under entangle_jax
    package = Path(entangle_jax.__file__).resolve().parent
    folder = Path(paper.__file__).resolve().parent
    assert all((d / "__init__.py").is_file() for d in (folder, *folder.parents)
               if d.is_relative_to(package))
    root = package.parent
    assert [Path(load(name).__file__).parent for name in discover().values()] == \
        [Path(paper.__file__).parent] * len(discover())
    scripts = sorted((root / "figures").glob("fig*.py"))
    assert [p.stem for p in scripts] == sorted(discover())
    for path in scripts:
        number = path.stem.split("_")[0]
        real = "" if path.stem in STEMS else '"--real", '
        assert f'main(["figures", {real}"--only", "{number}", *sys.argv[1:]])' in path.read_text()
