"""Quantum Detectors Merlin .mib files (with their .hdr), read through RosettaSciIO.

A .mib file is a sequence of frames, each an ASCII header (``MQ1,...``,
384 bytes for one chip, 768 for a quad) followed by the pixels, big-endian
``U08``/``U16``/``U32``. The first header is checked here so that a file cut
short, or one in the unsupported raw (``R64``) mode, gives a clear error;
the .hdr file (``Frames in Acquisition``, ``Frames per Trigger``) and the
frame time stamps give the scan shape when the user does not.

Patterns are returned as RosettaSciIO returns them: flipped upside down
relative to the order of the pixels in the file (``np.flip(axis=-2)``), the
orientation the Merlin software shows.
"""

from __future__ import annotations

from pathlib import Path

from stemnmf.errors import FormatError, ScanShapeError
from stemnmf.io.readers._common import Raw, scan_shape_from_name
from stemnmf.io.readers.rosetta import call_reader, choose_signal, raw_from_signal

__all__ = ["read_mib", "mib_layout"]

_DTYPES = {"U08": 1, "U16": 2, "U32": 4}


def _hdr(path: Path) -> dict:
    hdr = path.with_suffix(".hdr")
    if not hdr.exists():
        hdr = path.with_suffix(".HDR")
    values = {}
    if hdr.exists():
        for line in hdr.read_text(errors="replace").splitlines():
            if "\t" in line and not line.startswith(("HDR", "End")):
                key, value = line.split("\t", 1)
                values[key.rstrip(":").strip()] = value.strip()
    return values


def mib_layout(path: Path) -> dict:
    """Header size, frame shape, pixel type and frame count of a .mib file."""
    with open(path, "rb") as fh:
        head = fh.read(768)
    fields = head.decode("ascii", "replace").split(",")
    if len(fields) < 7 or fields[0] != "MQ1":
        raise FormatError(f"{path} is not a Merlin .mib file (no MQ1 header)", "give a .mib file written by Merlin")
    try:
        header_bytes = int(fields[2])
        width, height = int(fields[4]), int(fields[5])
    except ValueError:
        raise FormatError(f"{path} has a malformed MQ1 header", "check that the file is a complete .mib file") from None
    kind = fields[6].strip()
    if kind.startswith("R"):
        raise FormatError(
            f"{path} holds raw ({kind}) Merlin frames, which are not supported",
            "record in counting (U08/U16/U32) mode or convert the file with the Merlin software",
        )
    if kind not in _DTYPES or header_bytes <= 0 or width <= 0 or height <= 0:
        raise FormatError(f"{path} has an unknown pixel type {kind!r} in its header", "give a Merlin .mib file")
    frame_bytes = header_bytes + width * height * _DTYPES[kind]
    size = path.stat().st_size
    return {
        "header_bytes": header_bytes,
        "frame_shape": (height, width),
        "pixel_type": kind,
        "frame_bytes": frame_bytes,
        "n_frames": size // frame_bytes,
        "remainder": size % frame_bytes,
    }


def read_mib(path: Path, scan_shape=None, beam_energy=None, **_) -> Raw:
    """Read a .mib file; the scan shape comes from the user, the .hdr or the time stamps."""
    layout = mib_layout(path)
    hdr = _hdr(path)
    n = layout["n_frames"]
    expected = None
    try:
        expected = int(hdr.get("Frames in Acquisition (Number)", "0")) or None
    except ValueError:
        pass
    if layout["remainder"] or (expected and expected > n):
        total = f" of the {expected} the .hdr announces" if expected else ""
        raise FormatError(
            f"{path} is truncated: it holds {n} complete frames{total}"
            + (f" and {layout['remainder']} bytes of a partial frame" if layout["remainder"] else ""),
            "copy the file again from the acquisition computer",
        )
    kwargs = {}
    source = "--scan-shape"
    per_trigger = hdr.get("Frames per Trigger (Number)", "1").strip()
    if scan_shape is None and per_trigger in ("", "0", "1"):
        scan_shape = scan_shape_from_name(path.stem, n)
        source = f"the name {path.name!r}"
    if scan_shape is not None:
        sy, sx = scan_shape
        if sy * sx != n:
            raise ScanShapeError(
                f"scan shape {sy}x{sx} needs {sy * sx} frames but {path} holds {n}",
                "give a scan shape whose rows x columns equals the number of frames",
            )
        kwargs["navigation_shape"] = (sx, sy)
    signals = call_reader(path, "mib", **kwargs)
    signal = choose_signal(path, signals, "Merlin MIB")
    data = signal["data"]
    if data.ndim == 4 and 1 in data.shape[:2] and scan_shape is None:
        # RosettaSciIO found no line structure: treat it as a stack of frames
        data = data.reshape(-1, *data.shape[2:])
        signal = {**signal, "data": data, "axes": []}
    raw = raw_from_signal(path, signal, "Merlin MIB", beam_energy=beam_energy)
    raw.metadata.update({"pixel_type": layout["pixel_type"], "frames_in_file": n})
    if hdr:
        keep = ("Frames in Acquisition (Number)", "Frames per Trigger (Number)", "Counter Depth (number)",
                "Assembly Size (NX1, 2X2)", "Software Version")
        raw.metadata["hdr"] = {k: hdr[k] for k in keep if k in hdr}
    if data.ndim == 4:
        if scan_shape is not None:
            raw.metadata["scan_shape_source"] = source
        elif per_trigger not in ("", "0", "1"):
            raw.metadata["scan_shape_source"] = f"the .hdr ({per_trigger} frames per trigger)"
        else:
            raw.metadata["scan_shape_source"] = "the frame time stamps"
    return raw
