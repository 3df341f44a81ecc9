"""Datasets by name: embedded procedural data, local `.npz` files, or tensorflow-datasets.

Look-up order for a name:
1. embedded (`shapes10`, `figures20`, `patterns20`): generated in code, deterministic from a seed;
2. `<data_dir>/<name>.npz`, then `<data_dir>/<name>_jpeg.npz` (data_dir from the
   argument, else $MLPRIV_DATA_DIR);
3. tensorflow-datasets, for `cifar10`, `cifar100`, `svhn_cropped`, `mnist` and
   `fashion_mnist`, when the `tfds` extra is installed (downloads on first use).

A `.npz` holds either raw arrays `x_train` u8[N, H, W, C], `y_train` int[N],
`x_test`, `y_test` or JPEG bytes `jpeg_{train,test}` with `offsets_{train,test}`
(the layout of ../shared/data/*_jpeg.npz); optionally `label_names`,
`y_{train,test}_coarse` and `coarse_label_names`.
"""

import functools
import hashlib
import io
import os
import zipfile
from typing import NamedTuple, Optional, Sequence

import numpy as np

from mlpriv_jax.data import procedural
from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write

EMBEDDED = {"shapes10": (10_000, 2_000), "figures20": (20_000, 2_000), "patterns20": (20_000, 2_000)}
TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn_cropped": "svhn_cropped",
              "mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10_jpeg": "cifar10",
              "cifar100_jpeg": "cifar100"}


class Dataset(NamedTuple):
  """Images are u8[N, H, W, C] (NHWC), labels int64[N]. Coarse labels are optional."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: Sequence[str]
  y_train_coarse: Optional[np.ndarray] = None
  y_test_coarse: Optional[np.ndarray] = None
  coarse_names: Optional[Sequence[str]] = None
  source: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self):
    return tuple(self.x_train.shape[1:])

  @property
  def source_kind(self) -> str:
    """'embedded', 'npz' (raw arrays), 'jpeg' (JPEG bytes in an npz) or 'tfds'."""
    if self.source == "embedded":
      return "embedded"
    if self.source.startswith("tfds:"):
      return "tfds"
    return "jpeg" if self.source.endswith("_jpeg.npz") else "npz"

  def describe(self, **extra) -> dict:
    """What a model artifact records of its training data: name, source, sizes (and `extra`, e.g. the seed)."""
    return dict(name=self.name, source=self.source, kind=self.source_kind, num_train=len(self.x_train),
                num_test=len(self.x_test), num_classes=self.num_classes, image_shape=list(self.image_shape), **extra)


class DataError(UserError):
  """A dataset could not be found or has the wrong form (one-line message)."""


def channel_stats(images: np.ndarray):
  """Per-channel mean and std of u8[N, H, W, C] images scaled to [0, 1]."""
  x = images[: 20_000].astype(np.float64) / 255.0
  return tuple(float(m) for m in x.mean(axis=(0, 1, 2))), tuple(float(s) for s in x.std(axis=(0, 1, 2)))


def default_data_dir() -> Optional[str]:
  return os.environ.get("MLPRIV_DATA_DIR") or None


def known_datasets() -> str:
  return ", ".join(list(EMBEDDED) + sorted(set(TFDS_NAMES)))


def load_dataset(name: str, data_dir: Optional[str] = None, *, seed: int = 0) -> Dataset:
  """Returns the dataset `name` (see the module docstring for where it is looked for).

  Raises:
    DataError: one line naming the dataset, where it looked, and how to get it.
  """
  if name in EMBEDDED:
    return _embedded(name, seed)
  data_dir = data_dir or default_data_dir()
  candidates = []
  if data_dir:
    base = name[: -len("_jpeg")] if name.endswith("_jpeg") else name
    for fname in dict.fromkeys((f"{name}.npz", f"{base}_jpeg.npz")):
      path = os.path.join(os.path.expanduser(data_dir), fname)
      candidates.append(path)
      if os.path.exists(path):
        return _from_npz(name, path)
  if name in TFDS_NAMES:
    try:
      import tensorflow_datasets  # noqa: F401  (only whether the tfds extra is installed)
    except ImportError:
      pass
    else:
      return _from_tfds(name, data_dir)
  where = ", ".join(candidates) if candidates else "no data_dir given (--data_dir or $MLPRIV_DATA_DIR)"
  if name not in TFDS_NAMES:
    raise DataError(f"unknown dataset {name!r} (looked for {where}); known: {known_datasets()}")
  raise DataError(f"dataset {name!r} not found: looked for {where}, and tensorflow-datasets is not installed; "
                  f"point --data_dir (or MLPRIV_DATA_DIR) at a folder holding {name}.npz, or "
                  f"`pip install 'mlpriv_jax[tfds]'` to download it, or use an embedded dataset "
                  f"({', '.join(EMBEDDED)})")


@functools.lru_cache(maxsize=8)
def _embedded(name: str, seed: int) -> Dataset:
  """Rendered once per machine and (name, seed, generator code): kept in the cache folder, loaded once per
  process; the arrays are read-only, so every caller shares them."""
  ds = _cached_render(name, seed)
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.y_train_coarse, ds.y_test_coarse):
    if a is not None:
      a.setflags(write=False)
  return ds


_ARRAYS = ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse")


def _cached_render(name: str, seed: int) -> Dataset:
  """`_render`, through a cache file named by the generator's source (figures20 takes ~20 s to render; a program
  or test process that loads it again reads ~70 MB instead). A changed generator is a new file; a broken one is
  rendered again."""
  code = hashlib.sha256(open(procedural.__file__, "rb").read() + f"{EMBEDDED[name]}:{np.__version__}".encode())
  cache = os.path.join(_cache_dir(), f"{name}_seed{seed}_{code.hexdigest()[:16]}.npz")
  if os.path.exists(cache):
    try:
      with np.load(cache) as z:
        arrays = {k: (z[k] if k in z.files else None) for k in _ARRAYS}
      return _assemble(name, arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass
  ds = _render(name, seed)
  try:
    atomic_write(cache, lambda f: np.savez(f, **{k: getattr(ds, k) for k in _ARRAYS if getattr(ds, k) is not None}))
  except OSError:
    pass  # a read-only home only costs the render next time
  return ds


def _assemble(name: str, a: dict) -> Dataset:
  if name == "shapes10":
    return Dataset(name, a["x_train"], a["y_train"], a["x_test"], a["y_test"], procedural.SHAPES10_CLASSES,
                   source="embedded")
  classes, coarse = {"figures20": (procedural.FIGURES20_CLASSES, procedural.FIGURES20_COARSE),
                     "patterns20": (procedural.PATTERNS20_CLASSES, procedural.PATTERNS20_COARSE)}[name]
  return Dataset(name, a["x_train"], a["y_train"], a["x_test"], a["y_test"], classes, a["y_train_coarse"],
                 a["y_test_coarse"], coarse, source="embedded")


def _render(name: str, seed: int) -> Dataset:
  n_train, n_test = EMBEDDED[name]
  render = {"shapes10": procedural.shapes10, "figures20": procedural.figures20,
            "patterns20": procedural.patterns20}[name]
  # Train and test come from disjoint seed streams.
  train, test = render(n_train, seed=2 * seed), render(n_test, seed=2 * seed + 1)
  a = dict(x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
  if name != "shapes10":
    a.update(y_train_coarse=train[2], y_test_coarse=test[2])
  return _assemble(name, a)


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  from PIL import Image  # Pillow is a core dependency; decoded with it for reproducible pixels.
  return np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                   for i in range(len(offsets) - 1)])


def _cache_dir() -> str:
  return os.environ.get("MLPRIV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mlpriv_jax")


def _decoded_jpeg_split(path: str, z, split: str) -> np.ndarray:
  """Decodes a JPEG split once (about 12 s for CIFAR-10) and caches the arrays."""
  st = os.stat(path)
  tag = hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}:{split}".encode()).hexdigest()[:16]
  cache = os.path.join(_cache_dir(), f"{os.path.basename(path)[:-4]}_{split}_{tag}.npy")
  if os.path.exists(cache):
    try:
      return np.load(cache)
    except (OSError, ValueError):
      pass  # a broken cache file is rebuilt
  x = _decode_jpegs(z[f"jpeg_{split}"], z[f"offsets_{split}"])
  try:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    atomic_write(cache, lambda f: np.save(f, x))
  except OSError:
    pass  # a read-only home only costs the decode next time
  return x


def _check_split(path, x, y, split):
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise DataError(f"{path}: x_{split} must be uint8 [N, H, W, C] with C in (1, 3), "
                    f"got {x.dtype} {list(x.shape)}")
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
    raise DataError(f"{path}: y_{split} must be integer [N] with N = {len(x)} (len of x_{split}), "
                    f"got {y.dtype} {list(y.shape)}")
  if len(y) and y.min() < 0:
    raise DataError(f"{path}: y_{split} holds negative labels")


def _from_npz(name: str, path: str) -> Dataset:
  """The dataset in the .npz at `path`; a damaged file (cut short, bytes changed, arrays of the wrong kind, JPEGs
  that do not decode) is one DataError naming it, whichever layer notices."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return _read_npz(name, path, z)
  except DataError:
    raise
  except (OSError, ValueError, KeyError, IndexError, EOFError, TypeError, zipfile.BadZipFile) as e:
    why = str(e).splitlines()[0] if str(e) else ""
    raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {why}); replace it") from None


def _read_npz(name: str, path: str, z) -> Dataset:
  keys = set(z.files)
  split = {}
  for s in ("train", "test"):
    if f"x_{s}" in keys:
      split[s] = z[f"x_{s}"]
    elif {f"jpeg_{s}", f"offsets_{s}"} <= keys:
      split[s] = _decoded_jpeg_split(path, z, s)
    else:
      raise DataError(f"{path}: needs x_{s} (or jpeg_{s} + offsets_{s}) and y_{s}; it holds {sorted(keys)}")
    if f"y_{s}" not in keys:
      raise DataError(f"{path}: missing y_{s}; it holds {sorted(keys)}")
  y_tr, y_te = z["y_train"], z["y_test"]
  _check_split(path, split["train"], y_tr, "train")
  _check_split(path, split["test"], y_te, "test")
  if split["train"].shape[1:] != split["test"].shape[1:]:
    raise DataError(f"{path}: train images {split['train'].shape[1:]} and test images "
                    f"{split['test'].shape[1:]} differ in shape")
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  names = [str(s) for s in z["label_names"]] if "label_names" in keys else [str(i) for i in range(num_classes)]
  if len(names) < num_classes:
    raise DataError(f"{path}: labels reach {num_classes - 1} but label_names has {len(names)} entries")
  coarse = {}
  if {"y_train_coarse", "y_test_coarse"} <= keys:
    coarse = dict(y_train_coarse=z["y_train_coarse"].astype(np.int64), y_test_coarse=z["y_test_coarse"].astype(np.int64))
    n_coarse = int(coarse["y_train_coarse"].max()) + 1
    coarse["coarse_names"] = ([str(s) for s in z["coarse_label_names"]] if "coarse_label_names" in keys
                              else [str(i) for i in range(n_coarse)])
  return Dataset(name, split["train"], y_tr.astype(np.int64), split["test"], y_te.astype(np.int64),
                 tuple(names), source=path, **coarse)


def _from_tfds(name: str, data_dir: Optional[str]) -> Dataset:
  import tensorflow_datasets as tfds
  tfds_name = TFDS_NAMES[name]
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    builder.download_and_prepare()
    out = {}
    for s in ("train", "test"):
      # Batches of 1024, not batch_size=-1 (which fails on mocked data).
      batches = list(tfds.as_numpy(builder.as_dataset(split=s, batch_size=1024)))
      cat = lambda k, dt: np.concatenate([b[k] for b in batches]).astype(dt) if k in batches[0] else None
      out[s] = (cat("image", np.uint8), cat("label", np.int64), cat("coarse_label", np.int64))
  except Exception as e:  # tfds raises many types; the user needs one line.
    raise DataError(f"tensorflow-datasets could not load {tfds_name!r} (data_dir={data_dir}): "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  info = builder.info.features
  names = tuple(info["label"].names)
  coarse = {}
  if out["train"][2] is not None:
    coarse = dict(y_train_coarse=out["train"][2], y_test_coarse=out["test"][2],
                  coarse_names=tuple(info["coarse_label"].names))
  return Dataset(name, out["train"][0], out["train"][1], out["test"][0], out["test"][1], names,
                 source=f"tfds:{tfds_name}", **coarse)
