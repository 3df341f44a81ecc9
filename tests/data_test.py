import io
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpriv_jax import data


@pytest.fixture(scope="module")
def shapes():
  return data.load_dataset("shapes10", seed=0)


def test_embedded_shapes10_form_and_determinism(shapes):
  assert shapes.x_train.shape == (10_000, 32, 32, 3) and shapes.x_train.dtype == np.uint8
  assert shapes.x_test.shape == (2_000, 32, 32, 3)
  assert shapes.num_classes == 10 and shapes.source == "embedded"
  counts = np.bincount(shapes.y_train, minlength=10)
  assert counts.min() > 800  # roughly balanced
  again = data.load_dataset("shapes10", seed=0)
  np.testing.assert_array_equal(again.x_train[:50], shapes.x_train[:50])
  other = data.load_dataset("shapes10", seed=1)
  assert not np.array_equal(other.x_train[:50], shapes.x_train[:50])
  # train and test come from different streams
  assert not np.array_equal(shapes.x_train[:50], shapes.x_test[:50])


def test_pool_is_a_different_distribution_with_a_hierarchy(shapes):
  pool = data.load_dataset("patterns20")
  assert pool.num_classes == 20 and len(pool.coarse_names) == 5
  np.testing.assert_array_equal(pool.y_train_coarse, pool.y_train // 4)
  # The distributions differ: pool images carry more high-frequency energy (textures).
  tv = lambda x: np.abs(np.diff(x[:1000].astype(np.float32), axis=1)).mean()
  assert tv(pool.x_train) > 1.25 * tv(shapes.x_train)  # measured 21.1 against 14.7


def test_figures20_form_hierarchy_and_determinism(shapes):
  pool = data.load_dataset("figures20")
  assert pool.x_train.shape == (20_000, 32, 32, 3) and pool.x_test.shape == (2_000, 32, 32, 3)
  assert pool.num_classes == 20 and len(pool.coarse_names) == 5 and pool.source == "embedded"
  np.testing.assert_array_equal(pool.y_train_coarse, pool.y_train // 4)
  assert np.bincount(pool.y_train, minlength=20).min() > 800
  assert not set(pool.class_names) & set(shapes.class_names)
  from mlpriv_jax.data import procedural
  x, y, c = procedural.figures20(64, seed=5)
  x2, y2, _ = procedural.figures20(64, seed=5)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  # Every class draws a figure of its own: a centred one of radius 8 covers 2-50% of the image, and no two
  # classes' masks overlap with IoU above 0.9 (pentagon and hexagon, the closest pair, measure 0.84).
  u, v = procedural._xx - 16, procedural._yy - 16
  masks = np.stack([procedural._figure_sdf(k, u, v, 8.0) < 0 for k in range(20)])
  assert 0.02 < masks.mean(axis=(1, 2)).min() and masks.mean(axis=(1, 2)).max() < 0.5
  inter = np.einsum("ahw,bhw->ab", masks, masks.astype(np.float32))
  iou = inter / (masks.sum((1, 2))[:, None] + masks.sum((1, 2))[None] - inter)
  assert (iou - np.eye(20)).max() < 0.9, np.unravel_index((iou - np.eye(20)).argmax(), iou.shape)


def test_embedded_render_is_cached_on_disk_and_a_broken_cache_is_rendered_again(tmp_path, monkeypatch):
  from mlpriv_jax.data import datasets
  monkeypatch.setenv("MLPRIV_CACHE_DIR", str(tmp_path))
  # Small renders: the cache's logic is what is tested (a render of the full 22,000 images took 15-26 s).
  monkeypatch.setattr(datasets, "EMBEDDED", {"patterns20": (300, 60), "shapes10": (100, 20)})
  first = datasets._cached_render("patterns20", 3)   # renders (what _render returns), writes the cache
  (cache,) = [f for f in os.listdir(tmp_path) if f.startswith("patterns20_seed3_")]
  render = datasets._render
  monkeypatch.setattr(datasets, "_render", lambda *a: pytest.fail("rendered again instead of reading the cache"))
  again = datasets._cached_render("patterns20", 3)   # reads it
  monkeypatch.setattr(datasets, "_render", render)
  for a in ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse"):
    np.testing.assert_array_equal(getattr(again, a), getattr(first, a))
  assert again.class_names == first.class_names and again.coarse_names == first.coarse_names
  assert again.x_train.dtype == first.x_train.dtype and first.y_train_coarse is not None and len(first.x_train) == 300
  open(tmp_path / cache, "wb").write(b"PK\x03\x04 not a zip")   # what a torn copy could leave
  np.testing.assert_array_equal(datasets._cached_render("patterns20", 3).x_test, first.x_test)
  shapes = datasets._cached_render("shapes10", 3)
  assert shapes.y_train_coarse is None and len(os.listdir(tmp_path)) == 2


def _write_npz(path, **arrays):
  np.savez(path, **arrays)


def test_local_npz_raw_arrays(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
  y = np.arange(20) % 4
  _write_npz(tmp_path / "toy.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5],
             label_names=np.array(["a", "b", "c", "d"]))
  ds = data.load_dataset("toy", str(tmp_path))
  np.testing.assert_array_equal(ds.x_train, x)
  assert ds.class_names == ("a", "b", "c", "d") and ds.y_train.dtype == np.int64


def test_local_npz_jpeg_layout(tmp_path, monkeypatch):
  from PIL import Image
  monkeypatch.setenv("MLPRIV_CACHE_DIR", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  imgs = np.repeat(np.repeat(rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), 8, 1), 8, 2)

  def pack(xs):
    blobs = []
    for im in xs:
      buf = io.BytesIO()
      Image.fromarray(im).save(buf, "JPEG", quality=95)
      blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    return np.concatenate(blobs), np.cumsum([0] + [len(b) for b in blobs])

  jt, ot = pack(imgs)
  _write_npz(tmp_path / "toy_jpeg.npz", jpeg_train=jt, offsets_train=ot, y_train=np.arange(6) % 2,
             jpeg_test=jt, offsets_test=ot, y_test=np.arange(6) % 2)
  ds = data.load_dataset("toy", str(tmp_path))  # falls back to <name>_jpeg.npz
  assert ds.x_train.shape == (6, 32, 32, 3)
  assert np.abs(ds.x_train.astype(int) - imgs).mean() < 12  # lossy (7.5 measured); unrelated images: ~85
  assert os.listdir(tmp_path / "cache")  # decoded once, cached
  again = data.load_dataset("toy", str(tmp_path))
  np.testing.assert_array_equal(again.x_train, ds.x_train)


@pytest.mark.parametrize("arrays,match", [
    (dict(x_train=np.zeros((4, 8, 8, 3), np.float32)), "must be uint8"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8)), "must be uint8"),
    (dict(y_train=np.zeros(3, np.int64)), "y_train must be integer"),
    (dict(y_train=np.zeros((4, 2), np.int64)), "y_train must be integer"),
    (dict(x_test=np.zeros((4, 9, 9, 3), np.uint8)), "differ in shape"),
])
def test_local_npz_wrong_form_is_one_clear_error(tmp_path, arrays, match):
  good = dict(x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.zeros(4, np.int64),
              x_test=np.zeros((4, 8, 8, 3), np.uint8), y_test=np.zeros(4, np.int64))
  good.update(arrays)
  _write_npz(tmp_path / "bad.npz", **good)
  with pytest.raises(data.DataError, match=match) as e:
    data.load_dataset("bad", str(tmp_path))
  assert "\n" not in str(e.value) and "bad.npz" in str(e.value)


def test_missing_npz_key_and_garbage_file(tmp_path):
  _write_npz(tmp_path / "nokey.npz", x_train=np.zeros((4, 8, 8, 3), np.uint8))
  with pytest.raises(data.DataError, match="needs x_test|missing y_train"):
    data.load_dataset("nokey", str(tmp_path))
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(data.DataError, match="not a readable .npz"):
    data.load_dataset("junk", str(tmp_path))


def _damage(path, how):
  """The .npz at path, damaged one of the ways a copy or a hand goes wrong."""
  raw = bytearray(path.read_bytes())
  if how == "cut":
    path.write_bytes(raw[: len(raw) // 2])
  elif how == "bytes":   # the stored arrays' bytes changed: the zip's CRC no longer matches
    for i in range(len(raw) // 4, len(raw) // 2, 7):
      raw[i] ^= 0x5A
    path.write_bytes(raw)


@pytest.mark.parametrize("how", ["cut", "bytes", "pickled", "no_labels", "bad_jpeg", "bad_offsets"])
def test_a_damaged_npz_is_one_line_naming_it(tmp_path, monkeypatch, how):
  """Every way a data file is damaged ends in one DataError naming the file, never a traceback from zipfile,
  numpy or Pillow."""
  monkeypatch.setenv("MLPRIV_CACHE_DIR", str(tmp_path / "cache"))
  x = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
  y = np.arange(64) % 4
  arrays = dict(x_train=x, y_train=y, x_test=x, y_test=y)
  if how == "pickled":
    arrays["y_train"] = np.array([object()] * 64, dtype=object)
  elif how == "no_labels":
    arrays.update(x_train=x[:0], y_train=y[:0], x_test=x[:0], y_test=y[:0])
  elif how in ("bad_jpeg", "bad_offsets"):
    del arrays["x_train"], arrays["x_test"]
    blob, offsets = np.frombuffer(b"\xff\xd8 not a jpeg" * 64, np.uint8), np.arange(65) * 16
    if how == "bad_offsets":
      offsets = offsets * 1000
    arrays.update(jpeg_train=blob, offsets_train=offsets, jpeg_test=blob, offsets_test=offsets)
  _write_npz(tmp_path / "bad.npz", **arrays)
  _damage(tmp_path / "bad.npz", how)
  with pytest.raises(data.DataError) as e:
    data.load_dataset("bad", str(tmp_path))
  assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "bad.npz") + ": "), str(e.value)


def test_missing_dataset_names_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.delenv("MLPRIV_DATA_DIR", raising=False)
  with pytest.raises(data.DataError, match="unknown dataset 'nope'.*known: shapes10"):
    data.load_dataset("nope", str(tmp_path))
  import mlpriv_jax.data.datasets as dsm
  monkeypatch.setitem(dsm.TFDS_NAMES, "svhn_fake", "svhn_fake")
  monkeypatch.setattr(dsm, "_from_tfds", lambda *a: pytest.fail("must not reach TFDS"))
  import builtins
  real_import = builtins.__import__
  monkeypatch.setattr(builtins, "__import__", lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n))
                      if n == "tensorflow_datasets" else real_import(n, *a, **k))
  with pytest.raises(data.DataError, match=r"dataset 'svhn_fake' not found: looked for .*svhn_fake.npz.*pip install"):
    data.load_dataset("svhn_fake", str(tmp_path))


def test_shared_cifar10_subset(data_dir):
  ds = data.load_dataset("cifar10", data_dir)
  assert ds.x_train.shape == (4000, 32, 32, 3) and ds.x_test.shape == (1000, 32, 32, 3)
  np.testing.assert_array_equal(ds.y_train[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])  # canonical order
  assert ds.class_names[0] == "airplane"


def test_tfds_path_with_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.delenv("MLPRIV_DATA_DIR", raising=False)
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset("cifar100", str(tmp_path))
  assert ds.source == "tfds:cifar100"
  assert ds.x_train.shape == (12, 32, 32, 3) and ds.x_train.dtype == np.uint8
  assert ds.num_classes == 100 and len(ds.coarse_names) == 20
  assert ds.y_train.max() < 100 and ds.y_train_coarse.max() < 20


def test_random_crop_flip_is_a_pure_function_of_the_key():
  x = jax.random.uniform(jax.random.key(0), (16, 32, 32, 3))
  a = data.random_crop_flip(jax.random.key(1), x)
  chex.assert_shape(a, x.shape)
  chex.assert_trees_all_close(a, data.random_crop_flip(jax.random.key(1), x))
  assert not np.allclose(a, data.random_crop_flip(jax.random.key(2), x))
  # Each output is a reflect-padded crop of its input, possibly mirrored.
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
  for i in range(16):
    found = any(np.allclose(a[i], c) for dy in range(9) for dx in range(9)
                for c in (padded[i, dy:dy + 32, dx:dx + 32], padded[i, dy:dy + 32, dx:dx + 32][:, ::-1]))
    assert found, i


def test_shift_and_flip():
  x = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
  np.testing.assert_array_equal(data.shift(x, 0, 0), x)
  np.testing.assert_array_equal(data.shift(x, 1, 0)[:, :-1], x[:, 1:])
  np.testing.assert_array_equal(data.hflip(data.hflip(x)), x)


def test_channel_stats():
  x = np.zeros((4, 2, 2, 3), np.uint8)
  x[..., 0] = 255
  mean, std = data.channel_stats(x)
  np.testing.assert_allclose(mean, (1, 0, 0))
  np.testing.assert_allclose(std, (0, 0, 0))
