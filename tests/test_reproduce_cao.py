import json

import pytest

from stemnmf.reproduce import cao2025
from stemnmf.reproduce.cao import published_comparison


def test_published_lmno_outputs_are_reproduced():
    table = published_comparison()
    assert table["max_abs_difference"]["psnr"] <= 0.002
    for metric in ("ssim", "gmsd", "mdsi"):
        assert table["max_abs_difference"][metric] <= 0.001
    # the study chose k = 8; the knee of both of its published loss curves is there
    assert table["knees"] == {"kloss_run1": 8, "kloss_run2": 8}


@pytest.mark.slow
def test_quick_reproduction_chooses_the_number_of_orientations(tmp_path):
    table = cao2025(tmp_path, quick=True, seed=0, n_orientations=8)
    assert (tmp_path / "cao2025.md").read_text().startswith("# Cao et al. 2025, reproduced")
    assert json.loads((tmp_path / "cao2025.json").read_text())["true_k"] == 8
    assert set(table["variants"]) == {"raw", "mean3", "ePattern", "low-rank"}
    for name, variant in table["variants"].items():
        assert abs(variant["chosen_k"] - 8) <= 1, name
        assert variant["ARI"] > 0.6, name
    # the peak reconstruction removes the background noise, the scan-space mean reduces it
    nsd = dict(zip(table["nsd"]["variants"], table["nsd"]["background_mean"]))
    assert nsd["ePattern"] < nsd["mean3"] < nsd["raw"]
