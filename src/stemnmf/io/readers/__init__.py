"""Readers for 4D-STEM files, one module per family of formats.

Every reader has the signature ``read(path, *, inner=None, scan_shape=None,
beam_energy=None) -> Raw`` and returns what it found (an array, array-like
or frame source of shape (sy, sx, qy, qx) or (n_frames, qy, qx), with the
calibration and metadata of the file); :func:`stemnmf.io.load` applies the
scan shape, the laziness and the user's calibration.

=================  ============================================================
module             formats
=================  ============================================================
``numpy_``         .npy
``hdf5``           .h5 / .hdf5 / .hdf (plain, stemnmf scan files; dispatches
                   py4DSTEM, NCEM and HyperSpy files to their readers)
``py4dstem``       py4DSTEM EMD 1.0 (.h5, .emd), read with h5py
``rosetta``        RosettaSciIO: .dm3/.dm4, .blo, .hspy, .zspy, .emd
                   (NCEM/Velox), .mrc, .app5, .ser/.emi
``merlin``         .mib (+ .hdr)
``empad``          .xml + .raw
``tvips``          .tvips
``tiff``           multi-page .tif/.tiff
``folder``         a folder of one BMP/PNG/TIFF image per probe position
=================  ============================================================

``sources`` holds the small picklable objects lazy arrays read through,
``layout`` applies the scan shape and builds the (lazy or in-memory) array,
``_common`` the units, names and RosettaSciIO-metadata helpers.
"""

from __future__ import annotations

import functools
from pathlib import Path

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw
from stemnmf.io.readers.h5files import h5_kind, open_h5
from stemnmf.io.readers.hdf5 import read_h5
from stemnmf.io.readers.rosetta import read_with_rosettasciio
from stemnmf.io.readers.sources import FrameSource

__all__ = ["Raw", "FrameSource", "reader_for", "EXTENSIONS"]


def _rosetta(plugin):
    def read(path, inner=None, **options):
        if inner is not None and plugin in ("hspy", "emd"):
            return read_h5(path, inner=inner, **options)
        return read_with_rosettasciio(path, plugin, **options)

    read.__name__ = f"read_{plugin}"
    return read


def _lazy(module, name):
    def read(path, **options):
        import importlib

        return getattr(importlib.import_module(f"stemnmf.io.readers.{module}"), name)(path, **options)

    read.__name__ = name
    return read


def _read_emd(path: Path, inner=None, **options) -> Raw:
    with open_h5(path) as h5:
        kind = h5_kind(h5)
    if kind in ("emd1", "stemnmf", "plain") or inner is not None:
        return read_h5(path, inner=inner, **options)
    return read_with_rosettasciio(path, "emd", **options)


def _read_raw(path: Path, **options) -> Raw:
    """A .raw file: EMPAD data, read through the .xml beside it."""
    import xml.etree.ElementTree as ET

    for xml in sorted(path.parent.glob("*.xml")):
        try:
            node = ET.parse(xml).getroot().find("raw_file")
        except (ET.ParseError, OSError):
            continue
        name = None if node is None else (node.get("filename") or node.text or "")
        if name and name.replace("\\", "/").split("/")[-1] == path.name:
            return _lazy("empad", "read_empad")(xml, **options)
    raise FormatError(
        f"{path} is a raw binary file with no description of its layout",
        "give the EMPAD .xml file that names it, or convert the data to .npy or .h5",
    )


def _read_hdr(path: Path, **options) -> Raw:
    """A Merlin .hdr file: read the .mib beside it."""
    for suffix in (".mib", ".MIB"):
        mib = path.with_suffix(suffix)
        if mib.exists():
            return _lazy("merlin", "read_mib")(mib, **options)
    raise FormatError(f"{path} is a Merlin header with no .mib file beside it", "give the .mib file")


#: extension (lower case) -> reader
EXTENSIONS = {
    ".npy": _lazy("numpy_", "read_npy"),
    ".h5": _lazy("hdf5", "read_h5"),
    ".hdf5": _lazy("hdf5", "read_h5"),
    ".hdf": _lazy("hdf5", "read_h5"),
    ".emd": _read_emd,
    ".hspy": _rosetta("hspy"),
    ".zspy": _rosetta("zspy"),
    ".dm3": _rosetta("dm"),
    ".dm4": _rosetta("dm"),
    ".blo": _rosetta("blo"),
    ".mib": _lazy("merlin", "read_mib"),
    ".hdr": _read_hdr,
    ".xml": _lazy("empad", "read_empad"),
    ".raw": _read_raw,
    ".tvips": _lazy("tvips", "read_tvips"),
    ".tif": _lazy("tiff", "read_tiff"),
    ".tiff": _lazy("tiff", "read_tiff"),
    ".mrc": _rosetta("mrc"),
    ".app5": _rosetta("app5"),
    ".ser": _rosetta("tia"),
    ".emi": _rosetta("tia"),
    ".de5": _rosetta("emd"),
}

#: folders that are one file format rather than a folder of images
FOLDER_FORMATS = {".zspy": _rosetta("zspy")}


@functools.lru_cache(maxsize=None)
def _supported_text() -> str:
    return ", ".join(sorted(EXTENSIONS)) + ", or a folder of images"


def reader_for(path: Path):
    """The reader for ``path`` (a file or a folder); FormatError for an unknown type."""
    suffix = path.suffix.lower()
    if path.is_dir():
        if suffix in FOLDER_FORMATS:
            return FOLDER_FORMATS[suffix]
        return _lazy("folder", "read_folder")
    reader = EXTENSIONS.get(suffix)
    if reader is None:
        what = f"extension '{suffix}'" if suffix else "no extension"
        raise FormatError(f"{path} has an unsupported {what}", f"supported: {_supported_text()}")
    return reader
