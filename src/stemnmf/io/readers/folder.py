"""A folder of one image per probe position (BMP, PNG or TIFF), as Cao et al. use.

Images are taken in natural order of their names (``2.bmp`` before
``10.bmp``), row after row of the scan. The scan shape is given by the user
or read from the folder name: ``..._95x165`` (rows x columns) or
``..._Row_222_Col_102_...``. A folder holding no images but exactly one
sub-folder of images (the layout of ``torchvision.datasets.ImageFolder``
that Cao et al.'s code loads) is read from that sub-folder. Colour images
become one channel: equal channels give the first one, otherwise the
ITU-R BT.601 luminance (as Pillow's ``convert('L')`` and torchvision's
``Grayscale``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw, natural_key, scan_shape_from_name
from stemnmf.io.readers.sources import ImageFiles, read_image, to_gray

__all__ = ["read_folder", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".png", ".tif", ".tiff")


def _images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def read_folder(path: Path, **_) -> Raw:
    """Read a folder of images as a stack of frames (the scan shape is applied by ``load``)."""
    folder = path
    files = _images(folder)
    if not files:
        subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and _images(p)]
        if len(subfolders) == 1:
            folder = subfolders[0]
            files = _images(folder)
            log.info("reading the images in %s (the only sub-folder of %s)", folder.name, path)
        elif subfolders:
            names = ", ".join(p.name for p in subfolders[:4])
            raise FormatError(
                f"{path} holds no images but {len(subfolders)} folders of images ({names})",
                f"give one of them, e.g. {subfolders[0]}",
            )
    if not files:
        raise FormatError(
            f"{path} is a folder with no BMP, PNG or TIFF images",
            "give a folder of one image per probe position, or a file",
        )
    ignored = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS)
    try:
        first = read_image(files[0])
    except Exception as err:
        raise FormatError(f"{files[0]} is not a readable image ({type(err).__name__})", "check the file") from None
    colour = first.ndim == 3
    if colour:
        first = to_gray(first)
        log.warning("%s: the images are in colour; they are converted to one channel", folder)
    if first.ndim != 2 or first.dtype.kind not in "biuf":
        raise FormatError(f"{files[0]} is not a single-channel image of numbers", "save grayscale images")
    source = ImageFiles(files, first.shape, first.dtype, gray=None)
    shape, where = None, ""
    for name in (folder.name, path.name) if folder != path else (folder.name,):
        shape = scan_shape_from_name(name, len(files))
        if shape:
            where = f"the folder name {name!r}"
            break
    metadata = {"folder": str(folder), "n_files": len(files), "first_file": files[0].name, "last_file": files[-1].name}
    if ignored:
        metadata["ignored_files"] = ignored
    if colour:
        metadata["converted_from_colour"] = True
    return Raw(source, format=f"folder of {files[0].suffix.lower().lstrip('.').upper()} images", metadata=metadata,
               scan_shape=shape, scan_shape_source=where)
