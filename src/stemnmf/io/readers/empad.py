"""EMPAD (Electron Microscope Pixel Array Detector) scans: an .xml description and a .raw file.

The .raw file holds one record per probe position: 130 rows x 128 columns
of little-endian float32, of which the first 128 rows are the pattern and
the last 2 rows a per-frame footer (dropped). The .xml names the raw file
(``<raw_file filename=...>``), gives the scan shape (``<pix_x>``/``<pix_y>``,
``<scan_parameters mode="acquire">``, or a raw name ``scan_xN_yM.raw``) or
a ``series_count`` for a stack, and the calibration (the layout RosettaSciIO
reads): the scan field of view in m (``iom_measurements/optics/
get_full_scan_field_of_view``, or ``full_scan_field_of_view/x`` divided by
its ``scale_factor`` along the longer scan side), ``calibrated_pixelsize``
(x 1e9 = 1/nm), ``high_voltage`` (V) and ``nominal_camera_length`` (m).
"""

from __future__ import annotations

import ast
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw, positive
from stemnmf.io.readers.sources import RawFrames

__all__ = ["read_empad"]

ROWS, RAW_ROWS, COLS = 128, 130, 128
RECORD_BYTES = RAW_ROWS * COLS * 4


def _text(root, path):
    node = root.find(path)
    return None if node is None or node.text is None else node.text.strip()


def _number(root, path):
    text = _text(root, path)
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value


def _raw_path(xml: Path, root) -> Path:
    node = root.find("raw_file")
    name = None if node is None else (node.get("filename") or (node.text or "").strip())
    if not name:
        raise FormatError(f"{xml} names no raw file (<raw_file filename=...>)", "give the EMPAD .xml written with the scan")
    candidates = [xml.parent / name, xml.parent / re.split(r"[\\/]", name)[-1]]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FormatError(f"the raw file {name} named in {xml} is missing", "keep the .raw file beside its .xml")


def _scan_shape(root, raw: Path):
    """(shape, source) from the xml or the raw file name; (None, '') for a stack."""
    pix_x, pix_y = _number(root, "pix_x"), _number(root, "pix_y")
    if isinstance(pix_x, int) and isinstance(pix_y, int):
        return (pix_y, pix_x), "xml pix_y/pix_x"
    for sp in root.findall("scan_parameters"):
        if sp.get("mode", "acquire") == "acquire":
            rx, ry = _number(sp, "scan_resolution_x"), _number(sp, "scan_resolution_y")
            if isinstance(rx, int) and isinstance(ry, int):
                return (ry, rx), "xml scan_resolution"
    match = re.search(r"scan_x(\d+)_y(\d+)", raw.name)
    if match:
        return (int(match.group(2)), int(match.group(1))), "raw file name"
    return None, ""


def _calibration(root, scan_shape) -> dict:
    cal = {}
    fov = _number(root, "iom_measurements/optics/get_full_scan_field_of_view")
    if isinstance(fov, (tuple, list)) and len(fov) >= 2 and scan_shape:
        # as RosettaSciIO: the first value over the rows, the second over the columns
        steps = [positive(fov[0]) and fov[0] / scan_shape[0], positive(fov[1]) and fov[1] / scan_shape[1]]
        if steps[1]:
            cal["scan_step"] = steps[1] * 1e9
    else:
        width = positive(_number(root, "iom_measurements/full_scan_field_of_view/x"))
        factor = positive(_number(root, "iom_measurements/full_scan_field_of_view/scale_factor"))
        if width and factor and scan_shape:
            cal["scan_step"] = width / factor / max(scan_shape) * 1e9
    pixel = positive(_number(root, "iom_measurements/calibrated_pixelsize"))
    if pixel:
        cal["q_pixel"] = pixel * 1e9 / 10.0  # 1/nm -> 1/Å
    volts = positive(_number(root, "iom_measurements/high_voltage"))
    if volts:
        cal["beam_energy"] = volts / 1e3
    camera = positive(_number(root, "iom_measurements/nominal_camera_length"))
    if camera:
        cal["camera_length"] = camera * 1e3
    return cal


def read_empad(path: Path, **_) -> Raw:
    """Read an EMPAD scan from its .xml file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise FormatError(f"{path} is not a readable XML file ({err})", "give the EMPAD .xml file") from None
    if root.find("raw_file") is None:
        raise FormatError(
            f"{path} is an XML file but not an EMPAD description (no <raw_file>)", "give the EMPAD .xml file"
        )
    raw = _raw_path(path, root)
    size = raw.stat().st_size
    n, remainder = divmod(size, RECORD_BYTES)
    scan_shape, source = _scan_shape(root, raw)
    expected = math.prod(scan_shape) if scan_shape else _number(root, "scan_parameters/series_count")
    if remainder or (isinstance(expected, int) and expected > n):
        extra = f" and {remainder} bytes of a partial frame" if remainder else ""
        of = f" of {expected}" if isinstance(expected, int) else ""
        raise FormatError(
            f"{raw} is truncated: it holds {n}{of} complete 130 x 128 frames{extra}",
            "copy the .raw file again",
        )
    if n == 0:
        raise FormatError(f"{raw} holds no frames", "give a complete EMPAD .raw file")
    frames = RawFrames([(raw, 0, n)], (ROWS, COLS), "<f4", rows=RAW_ROWS)
    metadata = {"raw_file": raw.name}
    if scan_shape:
        metadata["scan_shape_source"] = source
    return Raw(
        frames,
        format="EMPAD",
        calibration=_calibration(root, scan_shape),
        metadata=metadata,
        scan_shape=scan_shape,
        scan_shape_source=f"{path.name} ({source})" if scan_shape else "",
    )
