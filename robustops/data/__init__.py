"""Data loading, validation (defence layer 1) and splits."""

from robustops.data.loaders import Dataset, load_dataset, load_digits, load_folder, load_npz
from robustops.data.split import Split, add_training_data, load_split, split_dataset, thin_classes

__all__ = [
    "Dataset",
    "Split",
    "add_training_data",
    "load_dataset",
    "load_digits",
    "load_folder",
    "load_npz",
    "load_split",
    "split_dataset",
    "thin_classes",
]
