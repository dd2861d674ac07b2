"""io is the one place a path is taken apart: file, inner dataset, size, checksum, truth."""

from pathlib import Path

import h5py
import numpy as np
import pytest

import stemnmf
from stemnmf.errors import InputError
from stemnmf.io import file_checksum, inspect_input, split_input_path


@pytest.mark.parametrize(
    "text, path, inner",
    [
        ("scan.h5:/group/data", "scan.h5", "/group/data"),
        ("SCAN.HDF5:/x", "SCAN.HDF5", "/x"),
        ("a/b.emd:/data/frames", "a/b.emd", "/data/frames"),
        ("scan.h5", "scan.h5", None),
        ("scan.h5:", "scan.h5", None),
        ("C:/data/scan.mib", "C:/data/scan.mib", None),  # a drive letter is no dataset
        ("folder/frames", "folder/frames", None),
    ],
)
def test_split_input_path(text, path, inner):
    assert split_input_path(text) == (Path(path), inner)


def test_inspect_input_reads_size_inner_path_and_truth_without_the_data(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as h5:
        h5["group/data"] = np.zeros((2, 3, 4, 5), np.float32)
    found = inspect_input(f"{plain}:/group/data")
    assert (found.path, found.inner, found.size, found.has_truth) == (plain, "/group/data", plain.stat().st_size, False)
    assert found.checksum() == file_checksum(plain)
    simulated = tmp_path / "tiny.h5"
    stemnmf.simulate.simulate_to_file(simulated, "tiny", seed=0, scan=(6, 6), det=(16, 16))
    assert inspect_input(simulated).has_truth
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x" * 10)
    (folder / "b.bin").write_bytes(b"y" * 7)
    assert inspect_input(folder).size == 17
    with pytest.raises(InputError, match="missing.h5 does not exist"):
        inspect_input(tmp_path / "missing.h5:/data")
