"""Bad input: each case raises a specific stemnmf error with one line (problem; fix),
gives exit status 2 and one line on stderr from the command line, and never
writes the input file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stemnmf.cli import main
from stemnmf.errors import FormatError, InputError, ScanShapeError, StemNMFError
from stemnmf.io import load

from test_io_formats import QX, QY, digest, known, write_dm, write_empad, write_mib, write_py4dstem


def expect_error(path, cls, *words, cli_args=(), **options):
    """``load`` raises ``cls`` mentioning ``words``; the CLI exits 2 with that one line; the input is untouched."""
    before = digest(path) if path.exists() else None
    with pytest.raises(cls) as info:
        load(path, **options)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__} is not {cls.__name__}"
    line = err.line
    assert "\n" not in line and err.fix, line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    if "scan_shape" in options and not cli_args:
        cli_args = ["--scan-shape", "x".join(str(n) for n in options["scan_shape"])]
    return line, before, cli_args


def cli_fails(capsys, path, line, cli_args=()):
    capsys.readouterr()
    assert main(["info", str(path), *cli_args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == f"stemnmf: error: {line}", err
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.fixture
def bad(tmp_path, capsys):
    """``bad(path, cls, *words, **options)`` runs both checks."""

    def run(path, cls, *words, **options):
        line, before, cli_args = expect_error(path, cls, *words, **options)
        cli_fails(capsys, path, line, cli_args)
        if before is not None:
            assert digest(path) == before, "the input was modified"
        return line

    return run


def test_missing_empty_and_unknown(tmp_path, bad):
    bad(tmp_path / "nothing.h5", InputError, "does not exist")
    (tmp_path / "empty.npy").write_bytes(b"")
    bad(tmp_path / "empty.npy", FormatError, "is empty")
    (tmp_path / "scan.xyz").write_bytes(b"1234")
    line = bad(tmp_path / "scan.xyz", FormatError, "unsupported extension '.xyz'", ".dm4", ".mib")
    assert "folder of images" in line
    (tmp_path / "noext").write_bytes(b"1234")
    bad(tmp_path / "noext", FormatError, "no extension")
    (tmp_path / "empty_dir").mkdir()
    bad(tmp_path / "empty_dir", FormatError, "no BMP, PNG or TIFF images")


def test_no_4d_dataset(tmp_path, bad):
    with h5py.File(tmp_path / "images.h5", "w") as h5:
        h5["image"] = np.zeros((8, 8))
        h5["spectrum"] = np.zeros(16)
    bad(tmp_path / "images.h5", FormatError, "holds no 4D dataset", "FILE.h5:/group/dataset")
    with h5py.File(tmp_path / "many.h5", "w") as h5:
        h5["a"] = np.zeros((2, 2, 4, 4))
        h5["b"] = np.zeros((2, 2, 4, 4))
    bad(tmp_path / "many.h5", FormatError, "holds 2 4D datasets", "many.h5:/a")
    with h5py.File(tmp_path / "strings.h5", "w") as h5:
        h5["a"] = np.zeros((2, 2, 4, 4))
    bad(tmp_path.joinpath("strings.h5:/nope"), FormatError, "has no dataset /nope")
    np.save(tmp_path / "image.npy", np.zeros((8, 8)))
    bad(tmp_path / "image.npy", FormatError, "2D array", "(sy, sx, qy, qx)")
    from rsciio.hspy import file_writer

    from test_io_formats import _signal

    file_writer(str(tmp_path / "image.hspy"), _signal(np.zeros((8, 10), np.float32), units=("nm", "nm"), scales=(1, 1)))
    bad(tmp_path / "image.hspy", FormatError, "holds no 4D-STEM data", "(8, 10)")
    write_py4dstem(tmp_path / "emd1.h5", np.zeros((2, 3, 4, 5)), {})
    with h5py.File(tmp_path / "emd1.h5", "a") as h5:
        del h5["py4DSTEM_root/datacube"]
    bad(tmp_path / "emd1.h5", FormatError, "EMD 1.0 file with no 3D or 4D array")
    (tmp_path / "other.xml").write_text("<root><thing/></root>")
    bad(tmp_path / "other.xml", FormatError, "not an EMPAD description")
    (tmp_path / "data.raw").write_bytes(b"\0" * 100)
    bad(tmp_path / "data.raw", FormatError, "no description of its layout")


def test_stack_without_scan_shape(tmp_path, bad):
    np.save(tmp_path / "stack.npy", known().reshape(-1, QY, QX))
    bad(tmp_path / "stack.npy", ScanShapeError, "stack of 15 patterns but no scan shape", "--scan-shape", "3x5")
    write_mib(tmp_path / "frames.mib", known().reshape(-1, QY, QX))
    bad(tmp_path / "frames.mib", ScanShapeError, "stack of 15 patterns")
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i in range(7):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{i}.png")
    bad(folder, ScanShapeError, "stack of 7 patterns", "7 is prime")


def test_scan_shape_does_not_fit(tmp_path, bad):
    np.save(tmp_path / "stack.npy", known().reshape(-1, QY, QX))
    bad(tmp_path / "stack.npy", ScanShapeError, "4x4", "needs 16 patterns", "holds 15", "3x5", scan_shape=(4, 4))
    np.save(tmp_path / "scan.npy", known())
    bad(tmp_path / "scan.npy", ScanShapeError, "does not fit", "3x5", scan_shape=(2, 7))
    write_mib(tmp_path / "frames.mib", known().reshape(-1, QY, QX))
    bad(tmp_path / "frames.mib", ScanShapeError, "needs 16 frames", "holds 15", scan_shape=(4, 4))
    # a shape written in a folder name that does not fit is not used
    from PIL import Image

    folder = tmp_path / "scan_4x4"
    folder.mkdir()
    for i in range(15):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{i}.png")
    bad(folder, ScanShapeError, "stack of 15 patterns but no scan shape")
    with pytest.raises(ScanShapeError, match="cannot read the scan shape 'banana'"):
        load(tmp_path / "stack.npy", scan_shape="banana")
    with pytest.raises(ScanShapeError, match="not two integers"):
        load(tmp_path / "stack.npy", scan_shape=(1, 2, 3))
    with pytest.raises(ScanShapeError, match="must be positive"):
        load(tmp_path / "stack.npy", scan_shape=(0, 15))
    # re-shaping a 4D scan with the same number of positions is allowed
    assert load(tmp_path / "scan.npy", scan_shape=(5, 3)).scan_shape == (5, 3)


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])


def test_truncated_files(tmp_path, bad):
    data = known()
    np.save(tmp_path / "scan.npy", data)
    _cut(tmp_path / "scan.npy", -100)
    bad(tmp_path / "scan.npy", FormatError, "is truncated", "copy or export the file again")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    bad(tmp_path / "junk.npy", FormatError, "not a readable .npy file")

    write_mib(tmp_path / "cut.mib", data.reshape(-1, QY, QX), hdr={"Frames in Acquisition (Number)": 15,
                                                                    "Frames per Trigger (Number)": 5})
    _cut(tmp_path / "cut.mib", -50)
    bad(tmp_path / "cut.mib", FormatError, "is truncated", "14 complete frames", "of the 15", "partial frame")
    write_mib(tmp_path / "short.mib", data.reshape(-1, QY, QX)[:10], hdr={"Frames in Acquisition (Number)": 15,
                                                                          "Frames per Trigger (Number)": 5})
    bad(tmp_path / "short.mib", FormatError, "10 complete frames of the 15")
    (tmp_path / "bad.mib").write_bytes(b"XX1,000001,00384" + b"\0" * 400)
    bad(tmp_path / "bad.mib", FormatError, "not a Merlin .mib file")
    (tmp_path / "raw.mib").write_bytes(b"MQ1,000001,00384,01,0008,0008,R64,   1x1," + b"\0" * 400)
    bad(tmp_path / "raw.mib", FormatError, "raw (R64)")

    with h5py.File(tmp_path / "cut.h5", "w") as h5:
        h5["data"] = data
    _cut(tmp_path / "cut.h5", 3000)
    bad(tmp_path / "cut.h5", FormatError, "not a readable HDF5 file", "check that the file is complete")
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    bad(tmp_path / "corrupt.h5", FormatError, "not a readable HDF5 file")

    frames = known((3, 5, 128, 128), np.float32)
    write_empad(tmp_path, frames, "<pix_x>5</pix_x><pix_y>3</pix_y>")
    _cut(tmp_path / "scan_x5_y3.raw", -1000)
    bad(tmp_path / "scan.xml", FormatError, "truncated", "14 of 15 complete 130 x 128 frames")

    write_dm(tmp_path / "cut.dm4", data, 4)
    _cut(tmp_path / "cut.dm4", 2000)
    bad(tmp_path / "cut.dm4", FormatError, "cut.dm4", "check that the file is complete")

    import tifffile

    tifffile.imwrite(tmp_path / "cut.tif", data.reshape(-1, QY, QX))
    # the frames are stored together after the first page's header: cut into them
    _cut(tmp_path / "cut.tif", 2000)
    bad(tmp_path / "cut.tif", FormatError, "is truncated", scan_shape=(3, 5))


def test_truncated_blockfile_and_tvips(tmp_path, bad):
    import warnings

    from rsciio.blockfile import file_writer as blo_writer
    from rsciio.tvips import file_writer as tvips_writer

    from test_io_formats import _signal

    data = known((3, 5, 8, 8), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blo_writer(str(tmp_path / "cut.blo"), _signal(data, units=("nm", "nm", "cm", "cm")))
    _cut(tmp_path / "cut.blo", -20)
    bad(tmp_path / "cut.blo", FormatError, "cut.blo", "not cut short")
    tvips_writer(str(tmp_path / "cut_000.tvips"), _signal(known().reshape(-1, QY, QX), units=("s", "1/nm", "1/nm")))
    _cut(tmp_path / "cut_000.tvips", -7)
    bad(tmp_path / "cut_000.tvips", FormatError, "is truncated", scan_shape=(3, 5))
    (tmp_path / "movie_003.tvips").write_bytes(b"\0" * 300)
    bad(tmp_path / "movie_003.tvips", FormatError, "not the first file", "_000.tvips")


def test_broken_image_in_folder(tmp_path, bad):
    from PIL import Image

    folder = tmp_path / "scan_2x2"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(folder / "3.png")
    bad(folder, FormatError, "3.png is 5 x 4 pixels", "same size")
    (folder / "3.png").write_bytes(b"not a png")
    bad(folder, FormatError, "3.png")


def test_every_error_is_a_stemnmf_error_with_a_fix():
    # the classes the loader raises all carry a problem and a fix
    for cls in (InputError, FormatError, ScanShapeError):
        err = cls("problem", "fix")
        assert isinstance(err, StemNMFError) and err.line == "problem; fix"
