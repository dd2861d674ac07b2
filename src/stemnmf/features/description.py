"""What every column of a feature matrix means, and the by-products worth keeping."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["COLUMN_DTYPE", "FeatureDescription", "make_columns"]

#: One record per feature column. Fields that do not apply are -1 (ring, index) or NaN.
COLUMN_DTYPE = np.dtype(
    [
        ("representation", "U4"),  # 'aa', 'rv', 'bd' or 'raw'
        ("index", "i4"),  # column index within its representation
        ("ring", "i4"),  # AA: ring index
        ("angle", "f4"),  # AA: sector centre; BD: direction of the grid bin; degrees from +qx towards +qy
        ("radius", "f4"),  # AA: ring mid-radius; RV: bin centre; BD: |k| of the grid bin; corrected pixels
        ("qy", "f4"),  # BD: grid bin offset from the beam (corrected px); raw: bin centre (detector px)
        ("qx", "f4"),
    ]
)


def make_columns(representation: str, n: int, **fields) -> np.ndarray:
    """A column table of ``n`` records for one representation; unspecified fields are -1 or NaN."""
    cols = np.zeros(n, dtype=COLUMN_DTYPE)
    cols["representation"] = representation
    cols["index"] = np.arange(n)
    cols["ring"] = -1
    for name in ("angle", "radius", "qy", "qx"):
        cols[name] = np.nan
    for name, value in fields.items():
        cols[name] = value
    return cols


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in feature settings")


@dataclasses.dataclass
class FeatureDescription:
    """Meaning of the columns of a feature matrix X, the settings used, and by-products.

    Attributes
    ----------
    representation : str
        The representations in column order, '+'-joined (e.g. ``'aa+bd'``).
    columns : numpy.ndarray
        (n_features,) records of :data:`COLUMN_DTYPE`.
    settings : dict
        Every option as resolved for this run (ring bounds, radial range,
        sector width, disk radius, thresholds, scaling, ...), JSON-serialisable.
    scale_min, scale_max : numpy.ndarray
        (n_features,) column minimum and maximum before scaling.
    origin : numpy.ndarray
        (2,) reference direct-beam position (qy, qx) of ``max_pattern``.
    ellipse : tuple or None
        (a, b, angle) used by the polar-elliptical transform.
    max_pattern, mean_pattern : numpy.ndarray or None
        (qy, qx) maximum and mean over the scan, each pattern first moved by
        whole pixels so its direct beam sits at ``origin``; masked pixels are 0
        in the mean and the minimum of the rest in the maximum.
    radii, radial_profile : numpy.ndarray or None
        Radial bin centres and the azimuthal mean of ``max_pattern`` (rings are found on it).
    rings : numpy.ndarray or None
        (n_rings, 2) inner and outer corrected radius of each AA ring.
    bragg_vector_map : numpy.ndarray or None
        BD by-product: calibrated disk positions summed over the scan on a 1 px
        grid; the direct beam is at its centre pixel.
    template : numpy.ndarray or None
        BD probe template used for the correlation.
    n_disks : numpy.ndarray or None
        (sy, sx) number of disks kept per position (BD).
    disks : numpy.ndarray or None
        (n_positions, max_disks, 3) detected disks (qy, qx, intensity) in detector
        pixels, NaN-padded. Written to the results file compactly (see :meth:`to_results`).
    """

    representation: str
    columns: np.ndarray
    settings: dict[str, Any]
    scale_min: np.ndarray
    scale_max: np.ndarray
    origin: np.ndarray
    ellipse: tuple[float, float, float] | None = None
    max_pattern: np.ndarray | None = None
    mean_pattern: np.ndarray | None = None
    radii: np.ndarray | None = None
    radial_profile: np.ndarray | None = None
    rings: np.ndarray | None = None
    bragg_vector_map: np.ndarray | None = None
    template: np.ndarray | None = None
    n_disks: np.ndarray | None = None
    disks: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def n_features(self) -> int:
        return int(self.columns.shape[0])

    @property
    def representations(self) -> list[str]:
        return self.representation.split("+")

    def block(self, representation: str) -> slice:
        """Columns of one representation (they are contiguous)."""
        idx = np.flatnonzero(self.columns["representation"] == representation)
        if idx.size == 0:
            raise KeyError(f"no {representation!r} columns in {self.representation!r}")
        return slice(int(idx[0]), int(idx[-1]) + 1)

    def blocks(self) -> dict[str, slice]:
        """Column slice of every representation, in column order."""
        return {name: self.block(name) for name in self.representations}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {s.stop - s.start}" for k, s in self.blocks().items())
        return f"<FeatureDescription {self.representation} ({parts} columns), scaling {self.settings.get('scaling')}>"

    def to_results(self) -> dict[str, Any]:
        """``{path: array_or_str}`` for the results file, all under ``/features``.

        Paths: ``representation`` (str), ``columns`` (table), ``settings``
        (JSON str), ``scale_min`` / ``scale_max`` (n_features,), ``origin``
        (2,), and when computed ``ellipse`` (3,), ``max_pattern`` / ``mean_pattern``
        (qy, qx), ``radii`` / ``radial_profile`` (n_r,), ``rings`` (n_rings, 2),
        ``bd/bragg_vector_map``, ``bd/template``, ``bd/n_disks`` (sy, sx), and
        ``bd/disks`` (sy, sx, m, 3) float16: every disk found (qy, qx in detector
        pixels, intensity as a fraction of ``bd/disks_intensity`` (), the strongest
        found in the scan, float32), strongest first, NaN-padded to ``m``, the
        most found at any position.
        """
        out: dict[str, Any] = {
            "/features/representation": self.representation,
            "/features/columns": self.columns,
            "/features/settings": json.dumps(self.settings, default=_json_default, sort_keys=True),
            "/features/scale_min": np.asarray(self.scale_min, dtype=np.float32),
            "/features/scale_max": np.asarray(self.scale_max, dtype=np.float32),
            "/features/origin": np.asarray(self.origin, dtype=np.float32),
        }
        optional = {
            "/features/ellipse": self.ellipse,
            "/features/max_pattern": self.max_pattern,
            "/features/mean_pattern": self.mean_pattern,
            "/features/radii": self.radii,
            "/features/radial_profile": self.radial_profile,
            "/features/rings": self.rings,
            "/features/bd/bragg_vector_map": self.bragg_vector_map,
            "/features/bd/template": self.template,
        }
        for path, value in optional.items():
            if value is not None:
                out[path] = np.asarray(value, dtype=np.float32)
        if self.n_disks is not None:
            out["/features/bd/n_disks"] = np.asarray(self.n_disks, dtype=np.int32)
        if self.disks is not None and self.n_disks is not None:
            out.update(_compact_disks(self.disks, np.shape(self.n_disks)))
        return out

    @classmethod
    def from_results(cls, results: Mapping[str, Any]) -> FeatureDescription:
        """Rebuild a description from a results file's ``/features`` datasets (as :meth:`to_results` wrote them)."""

        def get(path):
            return results[path] if path in results else None

        ellipse = get("/features/ellipse")
        columns = np.asarray(results["/features/columns"])
        table = np.zeros(columns.shape, dtype=COLUMN_DTYPE)
        for name in COLUMN_DTYPE.names:
            table[name] = columns[name]
        return cls(
            representation=str(results["/features/representation"]),
            columns=table,
            settings=json.loads(str(results["/features/settings"])),
            scale_min=np.asarray(results["/features/scale_min"]),
            scale_max=np.asarray(results["/features/scale_max"]),
            origin=np.asarray(results["/features/origin"]),
            ellipse=None if ellipse is None else tuple(float(v) for v in ellipse),
            max_pattern=get("/features/max_pattern"),
            mean_pattern=get("/features/mean_pattern"),
            radii=get("/features/radii"),
            radial_profile=get("/features/radial_profile"),
            rings=get("/features/rings"),
            bragg_vector_map=get("/features/bd/bragg_vector_map"),
            template=get("/features/bd/template"),
            n_disks=get("/features/bd/n_disks"),
        )


def _compact_disks(disks: np.ndarray, scan_shape) -> dict[str, np.ndarray]:
    """``bd/disks`` (sy, sx, m, 3) float16 and ``bd/disks_intensity`` () of the found disks (see ``to_results``)."""
    disks = np.asarray(disks, dtype=np.float32)
    found = np.isfinite(disks[..., 0])
    m = int(found.sum(axis=1).max(initial=0))
    kept = disks[:, :m].copy()
    strongest = float(np.nanmax(kept[..., 2])) if m else 1.0
    strongest = strongest if np.isfinite(strongest) and strongest > 0 else 1.0
    kept[..., 2] /= strongest
    return {"/features/bd/disks": kept.reshape(*scan_shape, m, 3).astype(np.float16),
            "/features/bd/disks_intensity": np.float32(strongest)}

