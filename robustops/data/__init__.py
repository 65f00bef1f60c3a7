"""Data loading, validation (defence layer 1) and splits."""

from robustops.data.loaders import Dataset, load_dataset, load_digits, load_folder, load_npz
from robustops.data.split import Split, split_dataset, thin_classes

__all__ = [
    "Dataset",
    "Split",
    "load_dataset",
    "load_digits",
    "load_folder",
    "load_npz",
    "split_dataset",
    "thin_classes",
]
