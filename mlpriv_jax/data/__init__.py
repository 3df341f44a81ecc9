"""Datasets by name (embedded, local .npz, tensorflow-datasets) and on-device augmentation."""

from mlpriv_jax.data.augment import hflip, random_crop_flip, shift, to_float
from mlpriv_jax.data.datasets import (EMBEDDED, DataError, Dataset, channel_stats, default_data_dir,
                                      known_datasets, load_dataset)
