"""`stemnmf reproduce bruefach2022 --quick`: the three simulated Ag films with RV, AA and BD."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from stemnmf.cli import main
from stemnmf.reproduce import bruefach

#: Score floors of the quick version (48 x 48 scans of 64 x 64 patterns, 3 restarts, seed 0),
#: a margin below what it measured (bench/RESULTS-quality.md): precision_A and mean TPR_G of
#: AA and BD on every film, and grain recall of AA.
FLOORS = {
    "precision_A": {"aa": 0.80, "bd": 0.80},  # measured 0.916-0.992 (AA), 0.902-0.997 (BD)
    # measured 0.796-0.892 (AA), 0.661-0.912 (BD) with transitive merging; with the evidence rule (issue 16)
    # ag3 AA gives 0.63: 9 regions for its 15 grains instead of 5 (grain recall 0.27 -> 0.40), each
    # smaller, so the mean share of a matched grain that a region covers falls (docs/nmf.md)
    "TPR_G": {"aa": 0.60, "bd": 0.55},
    "grain_recall": {"aa": 0.25},  # measured 0.333-0.667
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("bruefach")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["reproduce", "bruefach2022", "-o", str(outdir), "--quick", "-q"]) == 0
    return outdir, json.loads((outdir / "bruefach2022.json").read_text()), capture.getvalue()


@pytest.mark.slow
def test_quick_run_writes_the_comparison(quick):
    outdir, table, printed = quick
    text = (outdir / "bruefach2022.md").read_text()
    assert printed.startswith(text)  # the comparison is printed, not only written
    assert "# Bruefach, Ophus & Scott 2022, reproduced" in text and "## Mean TPR_G" in text
    assert "0.864" in text and "0.488" in text  # the published values sit beside ours
    assert set(table["runs"]) == {f"{p}/{f}" for p in bruefach.PRESETS for f in bruefach.FEATURES}
    assert table["published"]["TPR_G"]["aa"] == [0.864, 0.893, 0.736]
    assert table["published"]["TPR_G"]["bd"] == [0.895, 0.702, 0.488]
    assert table["published"]["precision_A"]["aa"] == [None, None, None]
    for preset in bruefach.PRESETS:
        assert (outdir / f"{preset}_quick.h5").exists()
        assert table["truth"][preset]["n_grains"] > 0
        for feature in bruefach.FEATURES:
            run = table["runs"][f"{preset}/{feature}"]
            assert (outdir / f"{preset}_{feature}" / "results.h5").exists()
            assert run["n_regions"] >= 1 and run["k"] >= 1 and run["seconds"] > 0
            assert run["area_nm2"]["median"] > 0 and run["max_feret_nm"]["median"] > 0


@pytest.mark.slow
def test_quick_run_reaches_the_floors(quick):
    _, table, _ = quick
    for name, floors in FLOORS.items():
        for feature, floor in floors.items():
            for preset in bruefach.PRESETS:
                value = table["runs"][f"{preset}/{feature}"][name]
                assert value is not None and value >= floor, (name, feature, preset, value)


@pytest.mark.slow
def test_scans_are_reused_only_when_they_match(quick):
    outdir, _, _ = quick
    path, reused = bruefach._scan_file(outdir, "ag1", bruefach.QUICK, 0)
    assert reused and path.name == "ag1_quick.h5"
    other = outdir / "other"
    other.mkdir()
    (other / "ag1_quick.h5").write_bytes((outdir / "ag1_quick.h5").read_bytes())
    path, reused = bruefach._scan_file(other, "ag1", {**bruefach.QUICK, "scan": (24, 24)}, 0)
    assert not reused and bruefach._simulation_metadata(path)["parameters"]["scan"] == [24, 24]


def test_markdown_of_a_hand_made_table():
    runs = {}
    for p in bruefach.PRESETS:
        for f in bruefach.FEATURES:
            runs[f"{p}/{f}"] = dict(
                precision_A=0.95, TPR_A=0.9, TPR_G=0.85, precision_G=0.9, IoU_G=0.8, grain_recall=0.7, ARI=0.5,
                ARI_regions=0.6, n_clusters=10, n_grains=12, k=10, initial_k=50, n_regions=10,
                area_nm2={"median": 20.0, "q25": 10.0, "q75": 30.0}, max_feret_nm={"median": 5.0, "q25": 4.0, "q75": 6.0},
                seconds=1.0,
            )
    table = {
        "presets": list(bruefach.PRESETS), "features": list(bruefach.FEATURES), "quick": True, "seed": 3,
        "geometry": {"scan": [48, 48], "det": 64, "n_restarts": 3},
        "published": {k: {f: list(v) for f, v in d.items()} for k, d in bruefach.PUBLISHED.items()},
        "targets": {"TPR_G": {f: list(v) for f, v in bruefach.TARGETS["TPR_G"].items()}, "precision_A": 0.9},
        "truth": {p: {"area_nm2": {"median": 18.0, "q25": 9.0, "q75": 27.0}, "max_feret_nm": None} for p in bruefach.PRESETS},
        "runs": runs, "seconds": 9.0,
    }
    text = bruefach.markdown(table)
    # AA on ag1: TPR_G 0.85 misses its 0.90 target; BD on ag3 reaches 0.70; the paper's values in brackets
    assert "| AA | 0.850 ✗ (0.864; >= 0.90) | 0.850 ✗ (0.893; >= 0.90) | 0.850 ✓ (0.736; >= 0.80) |" in text
    assert "| BD | 0.850 ✗ (0.895; >= 0.90) | 0.850 ✓ (0.702; >= 0.80) | 0.850 ✓ (0.488; >= 0.70) |" in text
    assert "| RV | 0.950 (n/a) | 0.950 (n/a) | 0.950 (n/a) |" in text
    assert "| ag1 | 18.0 (9.0-27.0) | n/a |" in text
    lines = bruefach.summary_lines(table)
    assert lines[1].startswith("AA: TPR_G 0.850, 0.850, 0.850 (paper 0.864, 0.893, 0.736)")


def test_cli_rejects_an_unknown_study(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "nobody2020", "-o", "x"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
