import argparse
import tomllib

import numpy as np
import pytest

from stemnmf.config import (
    Config,
    add_config_arguments,
    config_from_args,
    default_toml,
    load_config,
    parse_k,
    parse_k_range,
)
from stemnmf.errors import ConfigError


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    add_config_arguments(p)
    return p


def test_defaults_are_documented_values():
    c = Config()
    assert c.features.representation == "aa" and c.nmf.k is None
    assert c.nmf.method("aa") == "iterative" and c.nmf.method("bd+aa") == "iterative"
    assert c.nmf.method("raw") == "auto" and c.nmf.method("raw+aa") == "auto"
    c.nmf.k = 7
    assert c.nmf.method("raw") == 7 and c.nmf.method("aa") == 7
    assert c.calibrate.hot_pixel_threshold == 0.55 and c.features.sector_width == 5.0
    assert c.analysis.overlap_thresholds == [0.75, 0.8, 0.85, 0.9, 0.95]
    assert c.analysis.min_region_size == 25 and c.nmf.n_restarts == 25


def test_default_toml_round_trips():
    assert Config.from_dict(tomllib.loads(default_toml())) == Config()


def test_every_config_option_has_a_command_line_twin():
    text = default_toml()
    flags = {a for action in parser()._actions for a in action.option_strings}
    for line in text.splitlines():
        if line.startswith("# ") and line.endswith(")") and "(--" in line:
            assert line.rsplit("(", 1)[1][:-1] in flags


def test_command_line_wins_over_file_over_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[features]\nrepresentation = "bd"\nbd_bin = 5\n[nmf]\nk = 6\n')
    args = parser().parse_args(["--config", str(path), "--k", "iterative", "--no-hot-pixels"])
    c = config_from_args(args)
    assert c.features.representation == "bd" and c.features.bd_bin == 5  # file
    assert c.nmf.k == "iterative" and c.calibrate.hot_pixels is False  # command line
    assert c.analysis.refine == "yen"  # default


def test_lists_from_the_command_line():
    args = parser().parse_args(["--overlap-thresholds", "0.8,0.9", "--rings", "10:18,22:30"])
    c = config_from_args(args)
    assert c.analysis.overlap_thresholds == [0.8, 0.9]
    assert c.features.rings == [[10.0, 18.0], [22.0, 30.0]]


@pytest.mark.parametrize(
    "content,message",
    [
        ("[feature]\nx = 1\n", "unknown section [feature]"),
        ("[features]\nrepresentaton = 'aa'\n", "unknown option 'representaton'"),
        ("[nmf]\nk = 'lots'\n", "k='lots' is not valid"),
        ("[analysis]\nrefine = 'magic'\n", "not one of yen, otsu, none"),
        ("[analysis]\noverlap_thresholds = [1.5]\n", "overlap_thresholds must be numbers in (0, 1]"),
        ("[calibrate]\nbin_q = 0\n", "bin_q=0 must be at least 1"),
        ("[nmf\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "run.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_parse_k():
    assert parse_k("AUTO") == "auto" and parse_k("7") == 7 and parse_k(3) == 3
    for bad in ("0", "-2", "x", True):
        with pytest.raises(ConfigError):
            parse_k(bad)
    assert parse_k_range("3:20") == (3, 20) and parse_k_range([2, 5]) == (2, 5)
    for bad in ("5:3", "3", "a:b", "0:4"):
        with pytest.raises(ConfigError):
            parse_k_range(bad)


def test_calibrate_options_follow_the_config(tmp_path):
    c = Config()
    options = c.calibrate.calibrate_options()
    assert options["origin"] == "auto" and options["beam_stop"] == "auto" and options["hot_pixel_threshold"] == 0.55
    c.calibrate.origin, c.calibrate.origin_fit, c.calibrate.beam_stop = "none", "none", "none"
    options = c.calibrate.calibrate_options()
    assert options["origin"] is None and options["origin_fit"] is None and options["beam_stop"] is None
    mask = np.zeros((8, 8), bool)
    mask[3:5, 3:5] = True
    np.save(tmp_path / "stop.npy", mask)
    c.calibrate.beam_stop = str(tmp_path / "stop.npy")
    np.testing.assert_array_equal(c.calibrate.calibrate_options()["beam_stop"], mask)
    c.calibrate.beam_stop = str(tmp_path / "missing.npy")
    with pytest.raises(ConfigError, match="not a readable .npy mask"):
        c.calibrate.calibrate_options()
