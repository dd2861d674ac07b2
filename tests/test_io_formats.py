"""Every supported format: write a small file, load it, check shape, dtype, values and calibration.

Files are written with RosettaSciIO's writers where one exists (hspy, zspy,
blo, tvips, emd (NCEM), tiff) and otherwise built byte by byte from the
format's documented layout (DM3/DM4 tag files, Merlin .mib + .hdr, EMPAD
.xml + .raw, py4DSTEM EMD 1.0, .npy, plain HDF5, image folders). Each test
also runs ``stemnmf info`` on the file and checks that the input is never
written.
"""

from __future__ import annotations

import hashlib
import math
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from stemnmf.cli import main
from stemnmf.io import load
from stemnmf.io.dataset import electron_wavelength

SY, SX, QY, QX = 3, 5, 8, 10


def known(shape=(SY, SX, QY, QX), dtype=np.uint16):
    """Values that encode position and pixel: 1000*y + 100*x + 10*v + u (mod 60000)."""
    y, x, v, u = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return ((1000 * y + 100 * x + 10 * v + u) % 60000).astype(dtype)


def digest(path: Path) -> str:
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def check(path, expected, calibration=None, *, info_args=(), **options):
    """Load eagerly and lazily, compare with ``expected``, run ``stemnmf info``; return the dataset."""
    before = digest(Path(str(path).split(":/")[0]))
    eager = load(path, lazy=False, **options)
    lazy = load(path, lazy=True, **options)
    assert not eager.is_lazy and lazy.is_lazy
    for ds in (eager, lazy):
        assert ds.shape == expected.shape
        assert ds.dtype == expected.dtype
    np.testing.assert_array_equal(eager.data, expected)
    np.testing.assert_array_equal(lazy.data.compute(), expected)
    np.testing.assert_array_equal(lazy.read_rows(1, 2), expected[1:2])
    for name, value in (calibration or {}).items():
        got = getattr(eager.calibration, name)
        if value is None:
            assert got is None, name
        elif isinstance(value, tuple):
            assert got == pytest.approx(value, rel=1e-5), name
        else:
            assert got == pytest.approx(value, rel=1e-5), name
        assert getattr(lazy.calibration, name) == got
    if "scan_shape" in options and not info_args:
        sy, sx = options["scan_shape"] if not isinstance(options["scan_shape"], str) else options["scan_shape"].split("x")
        info_args = ["--scan-shape", f"{sy}x{sx}"]
    code = main(["info", str(path), *info_args])
    assert code == 0
    assert digest(Path(str(path).split(":/")[0])) == before, "the input file was modified"
    return eager


# -- NumPy and HDF5 ------------------------------------------------------------------------

def test_npy_4d_and_stack(tmp_path, capsys):
    data = known(dtype=np.float32)
    np.save(tmp_path / "scan.npy", data)
    check(tmp_path / "scan.npy", data, {"scan_step": 0.5, "q_pixel": None}, scan_step=0.5)
    out = capsys.readouterr().out
    assert "3 x 5 positions (15 patterns)" in out and "8 x 10 pixels, float32" in out and "NumPy" in out
    np.save(tmp_path / "stack.npy", data.reshape(-1, QY, QX))
    check(tmp_path / "stack.npy", data, scan_shape=(3, 5))
    # a scan shape written in the name is used for a stack
    np.save(tmp_path / "stack_3x5.npy", data.reshape(-1, QY, QX))
    assert load(tmp_path / "stack_3x5.npy").metadata["scan_shape_source"] == "the name 'stack_3x5.npy'"
    # Fortran order is read correctly too
    np.save(tmp_path / "fortran.npy", np.asfortranarray(data))
    check(tmp_path / "fortran.npy", data)


def test_npy_overrides_win(tmp_path):
    np.save(tmp_path / "scan.npy", known())
    ds = load(tmp_path / "scan.npy", scan_step=0.25, q_pixel=0.01, beam_energy=300, camera_length=80,
              convergence_angle=1.2)
    assert ds.calibration.scan_step == 0.25 and ds.calibration.q_pixel == 0.01
    assert ds.calibration.beam_energy == 300 and ds.calibration.camera_length == 80
    assert ds.calibration.convergence_angle == 1.2
    assert ds.metadata["calibration_source"]["scan_step"] == "option"


def test_plain_hdf5_found_automatically_or_by_path(tmp_path, capsys):
    data = known(dtype=np.uint32)
    with h5py.File(tmp_path / "plain.h5", "w") as h5:
        h5["meta/angles"] = np.arange(3.0)
        h5.create_dataset("exp/patterns", data=data, chunks=(1, SX, QY, QX), compression="gzip")
    ds = check(tmp_path / "plain.h5", data)
    assert ds.metadata["dataset"] == "/exp/patterns"
    with h5py.File(tmp_path / "two.h5", "w") as h5:
        h5["a"] = data
        h5["b/c"] = data[::-1]
    check(Path(f"{tmp_path / 'two.h5'}:/b/c"), data[::-1])
    # a 3D stack in an HDF5 file, with its scan shape
    with h5py.File(tmp_path / "stack.h5", "w") as h5:
        h5["frames"] = data.reshape(-1, QY, QX)
    check(tmp_path / "stack.h5", data, scan_shape="3x5")
    assert "HDF5" in capsys.readouterr().out


def test_stemnmf_scan_file_round_trip(tmp_path):
    from stemnmf.io import Calibration, Dataset4D, save_scan

    data = known(dtype=np.float32)
    mask = np.zeros((QY, QX), bool)
    mask[0, 0] = True
    save_scan(tmp_path / "s.h5", Dataset4D(data, Calibration(scan_step=0.3, q_pixel=0.02, beam_energy=200), mask=mask))
    ds = check(tmp_path / "s.h5", data, {"scan_step": 0.3, "q_pixel": 0.02, "beam_energy": 200})
    np.testing.assert_array_equal(ds.mask, mask)


# -- py4DSTEM EMD 1.0 ----------------------------------------------------------------------

def _md_item(group, key, value):
    if isinstance(value, str):
        d = group.create_dataset(key, data=value.encode("utf-8"))
        d.attrs["type"] = b"string"
    else:
        d = group.create_dataset(key, data=value)
        d.attrs["type"] = b"number"


def write_py4dstem(path, data, cal: dict, root_name="py4DSTEM_root", cube_name="datacube", dims=None):
    """An EMD 1.0 file laid out as py4DSTEM >= 0.13 (emdfile) writes a DataCube."""
    with h5py.File(path, "w") as f:
        f.attrs["emd_group_type"] = "file"
        f.attrs["version_major"] = 1
        f.attrs["version_minor"] = 0
        f.attrs["UUID"] = "0"
        f.attrs["authoring_program"] = "py4DSTEM"
        root = f.create_group(root_name)
        root.attrs["emd_group_type"] = "root"
        root.attrs["python_class"] = "Root"
        bundle = root.create_group("metadatabundle")
        bundle.attrs["emd_group_type"] = "metadatabundle"
        if cal:
            c = bundle.create_group("calibration")
            c.attrs["emd_group_type"] = "metadata"
            c.attrs["python_class"] = "Calibration"
            for key, value in cal.items():
                _md_item(c, key, value)
        cube = root.create_group(cube_name)
        cube.attrs["emd_group_type"] = "array"
        cube.attrs["python_class"] = "DataCube"
        d = cube.create_dataset("data", data=data)
        d.attrs["units"] = "pixel intensity"
        names = ["Rx", "Ry", "Qx", "Qy"]
        for n in range(4):
            step, units = (dims or {}).get(n, (1, "pixels"))
            dim = cube.create_dataset(f"dim{n}", data=np.array([0, step], dtype=np.float64))
            dim.attrs["name"] = names[n]
            dim.attrs["units"] = units
        # a second, 2D array (a virtual image) must not confuse the reader
        img = root.create_group("bright_field")
        img.attrs["emd_group_type"] = "array"
        img.attrs["python_class"] = "RealSlice"
        img.create_dataset("data", data=np.ones((SY, SX)))


def test_py4dstem_emd1(tmp_path, capsys):
    data = known(dtype=np.float32)
    cal = {"R_pixel_size": 2.5, "R_pixel_units": "A", "Q_pixel_size": 0.0125, "Q_pixel_units": "A^-1",
           "qx0_mean": 3.5, "qy0_mean": 4.25, "probe_convergence_semiangle_mrad": 1.8}
    write_py4dstem(tmp_path / "cube.h5", data, cal)
    ds = check(tmp_path / "cube.h5", data,
               {"scan_step": 0.25, "q_pixel": 0.0125, "convergence_angle": 1.8, "origin": (3.5, 4.25)})
    assert ds.metadata["format"] == "py4DSTEM EMD 1.0"
    assert ds.metadata["dataset"] == "/py4DSTEM_root/datacube/data"
    assert "py4DSTEM EMD 1.0" in capsys.readouterr().out
    # the datacube can be named; its calibration still applies
    named = load(f"{tmp_path / 'cube.h5'}:/py4DSTEM_root/datacube")
    assert named.calibration.scan_step == pytest.approx(0.25)
    np.testing.assert_array_equal(named.data, data)
    # .emd extension, nm units, and Q in mrad converted with the beam energy given
    cal2 = {"R_pixel_size": 1.5, "R_pixel_units": "nm", "Q_pixel_size": 0.5, "Q_pixel_units": "mrad"}
    write_py4dstem(tmp_path / "cube.emd", data, cal2)
    ds = load(tmp_path / "cube.emd", beam_energy=200)
    assert ds.calibration.scan_step == pytest.approx(1.5)
    assert ds.calibration.q_pixel == pytest.approx(0.5e-3 / electron_wavelength(200))
    # no calibration group: the dim vectors are used
    write_py4dstem(tmp_path / "dims.h5", data, {}, dims={0: (0.2, "nm"), 1: (0.2, "nm"), 2: (0.03, "A^-1"),
                                                          3: (0.03, "A^-1")})
    ds = load(tmp_path / "dims.h5")
    assert ds.calibration.scan_step == pytest.approx(0.2) and ds.calibration.q_pixel == pytest.approx(0.03)
    # pixel units mean uncalibrated
    write_py4dstem(tmp_path / "pix.h5", data, {"R_pixel_size": 1, "R_pixel_units": "pixels",
                                                "Q_pixel_size": 1, "Q_pixel_units": "pixels"})
    ds = load(tmp_path / "pix.h5")
    assert ds.calibration.scan_step is None and ds.calibration.q_pixel is None


# -- RosettaSciIO writers: hspy, zspy, emd (NCEM), blo, tvips, tiff -------------------------

def _signal(data, *, units=("nm", "nm", "1/nm", "1/nm"), scales=(0.5, 0.5, 0.2, 0.2), metadata=None, om=None,
            navigate=None):
    navigate = navigate if navigate is not None else [i < data.ndim - 2 for i in range(data.ndim)]
    axes = [
        dict(size=n, index_in_array=i, name=f"axis{i}", scale=s, offset=0.0, units=u, navigate=nav)
        for i, (n, s, u, nav) in enumerate(zip(data.shape, scales, units, navigate))
    ]
    md = {"General": {"title": "scan"}, "Signal": {"signal_type": "electron_diffraction"}}
    md.update(metadata or {})
    return dict(data=data, axes=axes, metadata=md, original_metadata=om or {}, attributes={"_lazy": False},
                tmp_parameters={}, learning_results={}, models={},
                package_info={"name": "stemnmf-tests", "version": "0"})


TEM = {"Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "camera_length": 80.0, "convergence_angle": 1.5}}}


def test_hspy(tmp_path, capsys):
    from rsciio.hspy import file_writer

    data = known()
    file_writer(str(tmp_path / "scan.hspy"), _signal(data, metadata=TEM))
    ds = check(tmp_path / "scan.hspy", data, {"scan_step": 0.5, "q_pixel": 0.02, "beam_energy": 200,
                                              "camera_length": 80, "convergence_angle": 1.5})
    assert ds.metadata["format"] == "HyperSpy HDF5"
    assert "HyperSpy" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:The NestedDirectoryStore is deprecated:FutureWarning")
def test_zspy(tmp_path):
    from rsciio.zspy import file_writer

    data = known(dtype=np.float32)
    # scan in µm, patterns in 1/Å
    sig = _signal(data, units=("µm", "µm", "1/Å", "1/Å"), scales=(0.002, 0.002, 0.015, 0.015), metadata=TEM)
    file_writer(str(tmp_path / "scan.zspy"), sig)
    check(tmp_path / "scan.zspy", data, {"scan_step": 2.0, "q_pixel": 0.015, "beam_energy": 200})


def test_emd_ncem(tmp_path):
    from rsciio.emd import file_writer

    data = known()
    file_writer(str(tmp_path / "scan.emd"), _signal(data, scales=(0.4, 0.4, 0.1, 0.1)))
    ds = check(tmp_path / "scan.emd", data, {"scan_step": 0.4, "q_pixel": 0.01})
    assert ds.metadata["format"] == "EMD (NCEM/Velox)"


def test_blockfile(tmp_path, capsys, caplog):
    from rsciio.blockfile import file_writer

    data = known((SY, SX, 8, 8), np.uint8)
    header = {"Beam_energy": 200000, "Note": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(tmp_path / "scan.blo"), _signal(data, units=("nm", "nm", "cm", "cm"),
                                                        scales=(1.25, 1.25, 0.01, 0.01),
                                                        om={"blockfile_header": header}))
    # the pattern axes of a blockfile are in cm on the camera, not in reciprocal space
    ds = check(tmp_path / "scan.blo", data, {"scan_step": 1.25, "beam_energy": 200, "q_pixel": None,
                                             "camera_length": None})
    assert ds.metadata["format"] == "NanoMegas blockfile"
    assert "NanoMegas" in capsys.readouterr().out
    assert any("pattern axes are in cm" in r.getMessage() for r in caplog.records)


def test_tvips(tmp_path):
    from rsciio.tvips import file_writer

    data = known()
    stack = data.reshape(-1, QY, QX)
    # (RosettaSciIO's TVIPS writer takes the pixel size from the first axis, and stores whole 1/nm)
    sig = _signal(stack, units=("s", "1/nm", "1/nm"), scales=(3, 3, 3), metadata=TEM)
    file_writer(str(tmp_path / "movie_000.tvips"), sig)
    ds = check(tmp_path / "movie_000.tvips", data, {"q_pixel": 0.3, "beam_energy": 200}, scan_shape=(3, 5))
    assert ds.metadata["format"] == "TVIPS"
    # split over several files
    file_writer(str(tmp_path / "split_000.tvips"), sig, max_file_size=4 * (QY * QX * 2 + 64) + 256)
    assert (tmp_path / "split_001.tvips").exists()
    check(tmp_path / "split_000.tvips", data, scan_shape=(3, 5))


def test_multipage_tiff(tmp_path, capsys):
    from rsciio.tiff import file_writer

    data = known()
    stack = data.reshape(-1, QY, QX)
    sig = _signal(stack, units=("", "1/nm", "1/nm"), scales=(1, 0.25, 0.25))
    file_writer(str(tmp_path / "stack.tif"), sig)
    ds = check(tmp_path / "stack.tif", data, {"q_pixel": 0.025}, scan_shape=(3, 5))
    assert ds.metadata["format"] == "TIFF"
    assert "TIFF" in capsys.readouterr().out
    # compressed pages are read page by page; a 4D TIFF keeps its scan shape
    import tifffile

    tifffile.imwrite(tmp_path / "zip.tiff", stack, compression="zlib")
    check(tmp_path / "zip.tiff", data, scan_shape=(3, 5))
    tifffile.imwrite(tmp_path / "four.tif", data)
    check(tmp_path / "four.tif", data)


def test_mrc_stack(tmp_path, capsys):
    """An MRC2014 file: 1024-byte header (NX, NY, NZ, MODE, ..., 'MAP ' at byte 208), then the frames."""
    data = known()
    header = bytearray(1024)
    struct.pack_into("<10i", header, 0, QX, QY, SY * SX, 6, 0, 0, 0, QX, QY, SY * SX)  # mode 6: uint16
    struct.pack_into("<3i", header, 64, 1, 2, 3)
    header[208:212] = b"MAP "
    header[212:214] = b"\x44\x44"  # little-endian machine stamp
    (tmp_path / "stack.mrc").write_bytes(bytes(header) + data.astype("<u2").tobytes())
    ds = check(tmp_path / "stack.mrc", data, scan_shape=(SY, SX))
    assert ds.metadata["format"] == "MRC"
    assert "MRC" in capsys.readouterr().out


# -- DigitalMicrograph DM3 / DM4, built from the tag-file layout ----------------------------

class _DMWriter:
    """Gatan DigitalMicrograph tag files (versions 3 and 4).

    Header: version, root length, byte order (big-endian; DM3 4-byte, DM4
    8-byte length). Tags: type (20 group, 21 data), name length (2 bytes),
    name, [DM4: 8-byte tag size]; a group has sorted/open flags and its tag
    count; a data tag has '%%%%', the length of its type description, the
    description (4-byte DM3, 8-byte DM4 integers) and the value (little-endian
    here, as the byte-order flag says).
    """

    TYPES = {np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("uint16"): 4, np.dtype("uint32"): 5,
             np.dtype("float32"): 6, np.dtype("float64"): 7, np.dtype("uint8"): 10}
    IMAGE_TYPES = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
                   np.dtype("uint16"): 10, np.dtype("uint32"): 11, np.dtype("float64"): 12}

    def __init__(self, version):
        self.v = version
        self.n = ">Q" if version == 4 else ">I"

    def _tag(self, kind, name, body):
        name = name.encode("latin-1")
        head = bytes([kind]) + struct.pack(">H", len(name)) + name
        if self.v == 4:
            head += struct.pack(">Q", len(body))
        return head + body

    def group(self, name, items):
        entries = [self.encode(k, v) for k, v in items]
        return self._tag(20, name, b"\x00\x00" + struct.pack(self.n, len(entries)) + b"".join(entries))

    def data(self, name, info, payload):
        body = b"%%%%" + struct.pack(self.n, len(info)) + b"".join(struct.pack(self.n, i) for i in info) + payload
        return self._tag(21, name, body)

    def encode(self, name, value):
        if isinstance(value, list):  # a list of (name, value) pairs is a group
            return self.group(name, value)
        if isinstance(value, str):
            return self.data(name, [20, 4, len(value)], value.encode("utf-16-le"))
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            return self.data(name, [20, self.TYPES[value.dtype], value.size], value.astype(value.dtype.newbyteorder("<")).tobytes())
        if isinstance(value, float):
            return self.data(name, [7], struct.pack("<d", value))
        if isinstance(value, np.float32):
            return self.data(name, [6], struct.pack("<f", value))
        return self.data(name, [3], struct.pack("<i", int(value)))

    def file(self, items) -> bytes:
        entries = [self.encode(k, v) for k, v in items]
        root = b"\x00\x00" + struct.pack(self.n, len(entries)) + b"".join(entries)
        head = struct.pack(">I", self.v) + struct.pack(self.n, len(root) + 8) + struct.pack(">I", 1)
        return head + root + b"\x00" * 8


def _dm_image(data, scales, units, tags, name):
    """An ImageList entry; DM lists dimensions fastest first (reversed NumPy order)."""
    dims = [("", int(n)) for n in data.shape[::-1]]
    cal = [("", [("Origin", np.float32(0)), ("Scale", np.float32(s)), ("Units", u)])
           for s, u in zip(scales[::-1], units[::-1])]
    return [
        ("ImageData", [
            ("Calibrations", [("Brightness", [("Origin", np.float32(0)), ("Scale", np.float32(1)), ("Units", "")]),
                              ("Dimension", cal)]),
            ("Data", data.reshape(-1)),
            ("DataType", _DMWriter.IMAGE_TYPES[data.dtype]),
            ("Dimensions", dims),
            ("PixelDepth", data.dtype.itemsize),
        ]),
        ("ImageTags", tags),
        ("Name", name),
    ]


def write_dm(path, data, version, scales=(0.25, 0.25, 0.5, 0.5), units=("nm", "nm", "1/nm", "1/nm")):
    tags = [("Microscope Info", [("Voltage", 300000.0), ("STEM Camera Length", np.float32(115.0)),
                                 ("Illumination Mode", "STEM")])]
    thumb = np.zeros((4, 4), np.uint8)
    items = [
        ("ImageList", [("", _dm_image(thumb, (1, 1), ("", ""), [], "thumbnail")),
                       ("", _dm_image(data, scales, units, tags, "4D scan"))]),
        ("Thumbnails", [("", [("ImageIndex", 0)])]),
    ]
    Path(path).write_bytes(_DMWriter(version).file(items))


@pytest.mark.parametrize("version", [3, 4])
def test_digitalmicrograph(tmp_path, version, capsys):
    data = known(dtype=np.float32) if version == 3 else known(dtype=np.uint16)
    path = tmp_path / f"scan.dm{version}"
    write_dm(path, data, version)
    # 0.5 1/nm = 0.05 1/Å; 300 kV; STEM camera length in mm
    ds = check(path, data, {"scan_step": 0.25, "q_pixel": 0.05, "beam_energy": 300, "camera_length": 115})
    assert ds.metadata["format"] == "Gatan DigitalMicrograph"
    assert "DigitalMicrograph" in capsys.readouterr().out


def test_digitalmicrograph_stack_and_angle_units(tmp_path):
    data = known(dtype=np.float32)
    write_dm(tmp_path / "stack.dm4", data.reshape(-1, QY, QX), 4, scales=(1, 0.4, 0.4), units=("", "mrad", "mrad"))
    ds = load(tmp_path / "stack.dm4", scan_shape=(3, 5))
    np.testing.assert_array_equal(ds.data, data)
    # mrad -> 1/Å with the 300 kV of the file: q = theta / lambda
    assert ds.calibration.q_pixel == pytest.approx(0.4e-3 / electron_wavelength(300), rel=1e-6)


# -- Merlin .mib + .hdr ------------------------------------------------------------------------

def mib_header(height, width, kind="U16", index=1, timestamp="2024-01-01T00:00:00.000000000Z"):
    fields = ["MQ1", f"{index:06d}", "00384", "01", f"{width:04d}", f"{height:04d}", kind, "   1x1", "01",
              "2024-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "1.000000E+1", *["0.000000E+0"] * 7,
              "3RX", *["125"] * 30, timestamp, "1000000ns", "12", ""]
    return ",".join(fields).encode("ascii").ljust(384, b"\0")


def write_mib(path, frames, kind="U16", hdr: dict | None = None):
    dtype = {"U08": ">u1", "U16": ">u2", "U32": ">u4"}[kind]
    with open(path, "wb") as fh:
        for i, frame in enumerate(frames):
            fh.write(mib_header(*frame.shape, kind, i + 1))
            fh.write(frame.astype(dtype).tobytes())
    if hdr is not None:
        lines = ["HDR,\t", *(f"{k}:\t{v}" for k, v in hdr.items()), "End\t"]
        Path(path).with_suffix(".hdr").write_text("\n".join(lines) + "\n")


def test_merlin_mib(tmp_path, capsys):
    data = known()
    frames = data.reshape(-1, QY, QX)
    # the .hdr gives 5 frames per trigger (one scan row each)
    write_mib(tmp_path / "scan.mib", frames, hdr={"Frames in Acquisition (Number)": 15, "Frames per Trigger (Number)": 5})
    # RosettaSciIO shows Merlin frames upside down relative to the file order
    expected = data[:, :, ::-1, :]
    ds = check(tmp_path / "scan.mib", expected)
    assert ds.metadata["format"] == "Merlin MIB" and ds.metadata["pixel_type"] == "U16"
    assert "Merlin" in capsys.readouterr().out
    # without a .hdr and with equal time stamps the file is a stack: the scan shape is given
    write_mib(tmp_path / "nohdr.mib", frames, kind="U32")
    check(tmp_path / "nohdr.mib", expected.astype(np.uint32), scan_shape=(3, 5))
    # the .hdr file can be given instead of the .mib
    np.testing.assert_array_equal(load(tmp_path / "scan.hdr").data, expected)


# -- EMPAD .xml + .raw ---------------------------------------------------------------------------

def write_empad(folder, data, xml_body, raw_name="scan_x5_y3.raw"):
    """130 x 128 little-endian float32 records: the 128 x 128 pattern, then 2 footer rows."""
    n = math.prod(data.shape[:-2])
    records = np.full((n, 130, 128), -7.0, dtype="<f4")
    records[:, :128] = data.reshape(n, 128, 128)
    records.tofile(folder / raw_name)
    xml = folder / "scan.xml"
    xml.write_text(f'<root><raw_file filename="{raw_name}"/>{xml_body}</root>')
    return xml


def test_empad(tmp_path, capsys):
    data = known((SY, SX, 128, 128), np.float32)
    body = ("<pix_x>5</pix_x><pix_y>3</pix_y><iom_measurements>"
            "<full_scan_field_of_view><x>1e-8</x><y>1e-8</y><scale_factor>0.8</scale_factor></full_scan_field_of_view>"
            "<calibrated_pixelsize>2e-10</calibrated_pixelsize><high_voltage>300000</high_voltage>"
            "<nominal_camera_length>0.23</nominal_camera_length></iom_measurements>")
    xml = write_empad(tmp_path, data, body)
    # step: 1e-8 m / 0.8 / 5 positions = 2.5 nm; q: 2e-10 * 1e9 = 0.2 1/nm = 0.02 1/Å
    ds = check(xml, data, {"scan_step": 2.5, "q_pixel": 0.02, "beam_energy": 300, "camera_length": 230})
    assert ds.metadata["format"] == "EMPAD"
    assert "EMPAD" in capsys.readouterr().out
    # the scan shape from the raw file name alone; the .raw file can be given too
    sub = tmp_path / "byname"
    sub.mkdir()
    write_empad(sub, data, "")
    np.testing.assert_array_equal(load(sub / "scan.xml").data, data)
    np.testing.assert_array_equal(load(sub / "scan_x5_y3.raw").data, data)


# -- folders of images (Cao et al. layout) -------------------------------------------------------

def _write_images(folder, frames, ext):
    from PIL import Image
    import tifffile

    folder.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        if ext == "tif":
            tifffile.imwrite(folder / f"{i}.tif", frame)
        else:
            Image.fromarray(frame).save(folder / f"{i}.{ext}")


@pytest.mark.parametrize("ext,dtype", [("bmp", np.uint8), ("png", np.uint16), ("tif", np.float32)])
def test_folder_of_images(tmp_path, ext, dtype, capsys):
    data = known((SY, SX, QY, QX), np.uint8 if dtype == np.uint8 else dtype) if dtype != np.uint8 else (
        known() % 251).astype(np.uint8)
    # named 1..15: natural order puts 2 before 10; the scan shape is in the folder name
    folder = tmp_path / f"G-Dataset_crop_{SY}x{SX}"
    _write_images(folder, data.reshape(-1, QY, QX), ext)
    ds = check(folder, data)
    assert ds.metadata["scan_shape_source"] == f"the folder name '{folder.name}'"
    assert f"{ext.upper()} images" in capsys.readouterr().out


def test_folder_cao_names_imagefolder_layout_and_colour(tmp_path):
    from PIL import Image

    data = (known() % 251).astype(np.uint8)
    # torchvision ImageFolder layout: root/<class>/<images>; Row_/Col_ naming
    outer = tmp_path / "NMC_Row_3_Col_5_dim_8_10"
    _write_images(outer / "class0", data.reshape(-1, QY, QX), "bmp")
    np.testing.assert_array_equal(load(outer).data, data)
    # colour BMPs with equal channels read back exactly; unequal ones as BT.601 luminance
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    frames = data.reshape(-1, QY, QX)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(np.stack([frame] * 3, axis=-1)).save(rgb / f"{i}.bmp")
    np.testing.assert_array_equal(load(rgb, scan_shape=(3, 5)).data, data)
    colour = np.zeros((QY, QX, 3), np.uint8)
    colour[..., 0] = 100
    Image.fromarray(colour).save(rgb / "1.bmp")
    first = load(rgb, scan_shape=(3, 5), lazy=True).data[0, 0].compute()
    assert (first == round(0.299 * 100)).all()
