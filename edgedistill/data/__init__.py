"""Data sets behind spec strings, their reproducible splits, and calibration subsets."""

from edgedistill.data.datasets import DataSplits, calibration_subset, load_data

__all__ = ["DataSplits", "calibration_subset", "load_data"]
