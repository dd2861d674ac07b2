"""Reading 4D-STEM scans, the Dataset4D container, scan and results files."""

from stemnmf.io.dataset import Calibration, Dataset4D, electron_wavelength
from stemnmf.io.files import atomic_output, file_checksum, split_input_path
from stemnmf.io.load import LAZY_THRESHOLD, InputFile, inspect_input, load, parse_scan_shape
from stemnmf.io.results import Results, load_results, save_results
from stemnmf.io.scanfile import Truth, has_truth, load_truth, save_scan
from stemnmf.io.summary import ValueReport, attach_summary, check_values, intensity_summary, summary_images

__all__ = [
    "Calibration",
    "InputFile",
    "Dataset4D",
    "LAZY_THRESHOLD",
    "Results",
    "Truth",
    "ValueReport",
    "atomic_output",
    "attach_summary",
    "check_values",
    "electron_wavelength",
    "file_checksum",
    "has_truth",
    "inspect_input",
    "intensity_summary",
    "load",
    "load_results",
    "load_truth",
    "parse_scan_shape",
    "save_results",
    "save_scan",
    "split_input_path",
    "summary_images",
]
