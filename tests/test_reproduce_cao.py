import json

import pytest

from stemnmf.cli import main
from stemnmf.reproduce.cao import published_comparison


def test_published_lmno_outputs_are_reproduced():
    table = published_comparison()
    assert table["max_abs_difference"]["psnr"] <= 0.002
    for metric in ("ssim", "gmsd", "mdsi"):
        assert table["max_abs_difference"][metric] <= 0.001
    # the study chose k = 8; the knee of both of its published loss curves is there
    assert table["knees"] == {"kloss_run1": 8, "kloss_run2": 8}


@pytest.mark.slow
def test_quick_reproduction_chooses_the_number_of_orientations(tmp_path, capsys):
    assert main(["reproduce", "cao2025", "-o", str(tmp_path), "--quick", "-q"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# Cao et al. 2025, reproduced") and "| variant | NSD |" in printed
    assert "chosen k" in printed and "36.522" in printed  # a published PSNR beside ours
    assert (tmp_path / "cao2025.md").read_text() in printed
    table = json.loads((tmp_path / "cao2025.json").read_text())
    assert table["true_k"] == 8 and table["quick"] is True
    assert not list(tmp_path.glob(".*.tmp-*"))  # written under temporary names, renamed when complete
    assert set(table["variants"]) == {"raw", "mean3", "ePattern", "low-rank"}
    for name, variant in table["variants"].items():
        assert abs(variant["chosen_k"] - 8) <= 1, name
        assert variant["ARI"] > 0.6, name
    # the peak reconstruction removes the background noise, the scan-space mean reduces it
    nsd = dict(zip(table["nsd"]["variants"], table["nsd"]["background_mean"]))
    assert nsd["ePattern"] < nsd["mean3"] < nsd["raw"]
