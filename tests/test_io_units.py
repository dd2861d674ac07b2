"""Unit conversions, scan shapes from names, natural order and RosettaSciIO metadata helpers."""

from __future__ import annotations

import math

import pytest

from stemnmf.io.dataset import electron_wavelength
from stemnmf.io.readers._common import (
    angle_mrad,
    apply_mapping,
    calibration_from_axes,
    calibration_from_hyperspy_metadata,
    length_nm,
    natural_key,
    reciprocal_per_angstrom,
    scan_shape_from_name,
)
from stemnmf.io.readers.layout import suggest_scan_shapes


@pytest.mark.parametrize(
    "scale,units,nm",
    [(2, "nm", 2), (2, "µm", 2000), (2, "μm", 2000), (2, "um", 2000), (5, "Å", 0.5), (5, "\u212b", 0.5),
     (5, "A", 0.5), (5, "angstrom", 0.5), (3e-9, "m", 3), (250, "pm", 0.25), (1, " nm ", 1)],
)
def test_lengths(scale, units, nm):
    assert length_nm(scale, units) == pytest.approx(nm)


@pytest.mark.parametrize(
    "scale,units,per_angstrom",
    [(0.2, "1/nm", 0.02), (0.2, "1 / nm", 0.02), (0.2, "nm^-1", 0.02), (0.2, "nm⁻¹", 0.02), (0.03, "1/Å", 0.03),
     (0.03, "A^-1", 0.03), (0.03, "1/A", 0.03), (1e9, "1/m", 0.1), (0.002, "1/pm", 0.2), (0.5, "[1_/_n_m]", 0.05)],
)
def test_reciprocal_lengths(scale, units, per_angstrom):
    assert reciprocal_per_angstrom(scale, units) == pytest.approx(per_angstrom)


def test_angles_and_non_units():
    assert angle_mrad(0.5, "mrad") == 0.5
    assert angle_mrad(0.002, "rad") == pytest.approx(2)
    assert angle_mrad(1, "deg") == pytest.approx(1000 * math.pi / 180)
    for units in ("", None, "<undefined>", "pixels", "s"):
        assert length_nm(1, units) is None and reciprocal_per_angstrom(1, units) is None
    assert length_nm(0, "nm") is None and length_nm(-1, "nm") is None and length_nm(float("nan"), "nm") is None
    assert reciprocal_per_angstrom(1, "nm") is None and length_nm(1, "1/nm") is None


def test_calibration_from_axes():
    axes = [dict(index_in_array=i, scale=s, units=u, navigate=i < 2)
            for i, (s, u) in enumerate([(0.5, "nm"), (0.5, "nm"), (0.8, "mrad"), (0.8, "mrad")])]
    cal, notes = calibration_from_axes(axes, 4)
    assert cal == {"scan_step": 0.5} and "give the beam energy" in notes[0]
    cal, notes = calibration_from_axes(axes, 4, beam_energy=300)
    assert cal["q_pixel"] == pytest.approx(0.8e-3 / electron_wavelength(300)) and notes == []
    axes[0]["scale"] = 0.25
    cal, notes = calibration_from_axes(axes, 4, beam_energy=300)
    assert cal["scan_step"] == 0.5 and "scan steps differ" in notes[0]
    uncalibrated = [dict(index_in_array=i, scale=1, units="", navigate=i < 2) for i in range(4)]
    assert calibration_from_axes(uncalibrated, 4) == ({}, [])


def test_hyperspy_metadata_and_mapping():
    md = {"Acquisition_instrument": {"TEM": {"beam_energy": 200, "convergence_angle": 1.1,
                                             "Detector": {"Diffraction": {"camera_length": 12}}}}}
    assert calibration_from_hyperspy_metadata(md) == {"beam_energy": 200, "camera_length": 120, "convergence_angle": 1.1}
    om = {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Voltage": 300000.0}}}}}
    mapping = {"ImageList.TagGroup0.ImageTags.Microscope_Info.Voltage": ("Acquisition_instrument.TEM.beam_energy",
                                                                         lambda v: v / 1e3)}
    assert apply_mapping(om, mapping, {}) == {"Acquisition_instrument": {"TEM": {"beam_energy": 300.0}}}
    assert apply_mapping(om, mapping, {}, skip=("Acquisition_instrument.TEM.beam_energy",)) == {}


def test_scan_shapes_from_names():
    assert scan_shape_from_name("G-Dataset_crop_95x165") == (95, 165)
    assert scan_shape_from_name("NMC-811_zone4_20ms_EDX_Row_222_Col_102_dim_384_384") == (222, 102)
    assert scan_shape_from_name("scan_x256_y128") == (128, 256)
    assert scan_shape_from_name("dp_256x256_scan_95x165", 95 * 165) == (95, 165)
    assert scan_shape_from_name("dp_256x256", 15) is None
    assert scan_shape_from_name("sample_3") is None
    assert suggest_scan_shapes(15675) == [(95, 165), (75, 209), (57, 275)]
    assert suggest_scan_shapes(7) == [(1, 7)]


def test_natural_order():
    names = ["10.bmp", "2.bmp", "1.bmp", "img_100.png", "img_20.png"]
    assert sorted(names, key=natural_key) == ["1.bmp", "2.bmp", "10.bmp", "img_20.png", "img_100.png"]
