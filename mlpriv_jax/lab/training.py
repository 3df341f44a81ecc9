"""Train one model, or K at once, on a named dataset into a workdir (what experiments/train.py runs).

The workdir receives `config.json`, `metrics.jsonl` (one line per epoch), checkpoints (for resuming only),
`results.json`, `results.jsonl` (the flat rows of `mlpriv_jax.results`), `keep.npy` (K > 1), and the model
artifact: `model/` for one model, `model_<k>/` for each of K.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from mlpriv_jax import data, models, results, train
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.utils import append_jsonl, write_json

STREAM_TRAIN, STREAM_KEEP = 0, 1   # fold_in(key(seed), STREAM_*)


def load_train_split(dataset: str, data_dir: Optional[str], seed: int, num_train: int = 0):
  """(Dataset, x_train, y_train): the first num_train training images (0: all)."""
  if num_train < 0:
    raise UserError(f"--num_train must be >= 0, got {num_train}")
  ds = data.load_dataset(dataset, data_dir, seed=seed)
  if num_train > len(ds.x_train):
    raise UserError(f"--num_train {num_train} exceeds the {len(ds.x_train)} training images of {ds.name}")
  n = num_train or len(ds.x_train)
  return ds, ds.x_train[:n], ds.y_train[:n]


def model_meta(ds, config: train.TrainConfig, *, seed: int, num_train: int, test_accuracy, **extra) -> dict:
  """An artifact's `meta`: the training data, the recipe and the test accuracy."""
  return dict(data=ds.describe(seed=seed, num_train_used=num_train), recipe=dataclasses.asdict(config),
              test_accuracy=test_accuracy, **extra)


def run(*, dataset: str, arch: str, workdir: str, config: train.TrainConfig, data_dir: Optional[str] = None,
        seed: int = 0, num_train: int = 0, num_models: int = 1, keep_fraction: float = 1.0,
        chunk_size: Optional[int] = None, model_axis: str = "auto", dtype: str = "float32",
        dropout_rate: float = 0.0, dp_target=None, run_config: Optional[dict] = None,
        log: Callable = print) -> dict:
  """Trains, evaluates and writes everything into `workdir`; returns results.json's content.

  dp_target: a `dp.DPTarget` to train with DP-SGD (batch_size is then the expected batch size); results.json's
  `dp` holds the accounted guarantee. run_config: extra entries for config.json (e.g. the preset); a rerun with
  the same workdir resumes.
  """
  t_start = time.time()
  if int(num_models) != num_models or num_models < 1:
    raise UserError(f"--num_models must be >= 1, got {num_models}")
  models.canonical_name(arch)  # an unknown name fails before any data is loaded
  config.validate()
  ds, x_train, y_train = load_train_split(dataset, data_dir, seed, num_train)
  # Under DP the input normalisation is public (CIFAR's constants): the private data's statistics would be an
  # un-noised release inside the model.
  mean, std = data.channel_stats(x_train) if dp_target is None else (models.CIFAR_MEAN, models.CIFAR_STD)
  model = models.get_model(arch, ds.num_classes, mean=mean, std=std, dropout_rate=dropout_rate, dtype=dtype)
  num_params = models.count_params(model, (1, *ds.image_shape))
  key = jax.random.key(seed)
  keep = None
  if num_models > 1:
    keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, STREAM_KEEP), num_models, len(x_train),
                                          keep_fraction))
  dp_config, dp_record = None, None
  if dp_target is not None:
    from mlpriv_jax import dp
    dp.check_dp_model(model)
    counts = keep.sum(1) if keep is not None else [len(x_train)]
    dp_config, dp_record = dp.calibrate_training(dp_target, counts=counts, batch_size=config.batch_size,
                                                 num_epochs=config.num_epochs)
    log(dp.describe(dp_record))
  cfg = dict(run_config or {}, seed=seed, num_models=num_models, keep_fraction=keep_fraction, dtype=dtype,
             dropout_rate=dropout_rate, arch=model.name, dataset=ds.name, data_source=ds.source,
             num_train=len(x_train), num_classes=ds.num_classes, mean=mean, std=std,
             image_shape=list(ds.image_shape), train_config=dataclasses.asdict(config), dp=dp_record)
  wd.claim(workdir, cfg, keys=("arch", "dataset", "num_classes", "num_models", "seed", "num_train", "dp"))
  log(f"{model.name}: {num_params:,} parameters; {ds.name} ({ds.source}): {len(x_train)} train, "
      f"{len(ds.x_test)} test images; {config.num_epochs} epochs on {jax.default_backend()}")

  metrics_path = os.path.join(workdir, "metrics.jsonl")

  def on_epoch_end(record):
    append_jsonl(metrics_path, record)
    acc = record.get("test_accuracy")
    acc = f"{np.mean(acc):.4f}" if acc is not None else "-"
    log(f"epoch {record['epoch']:4d}/{config.num_epochs} models {record['models']} "
        f"loss {record['train_loss']:.4f} test_acc {acc} {record['images_per_sec']:.0f} img/s")

  meta = dict(dataset=ds.name, seed=seed)
  eval_data = (ds.x_test, ds.y_test)
  if num_models == 1:
    result = train.train(model, config, x_train, y_train, jax.random.fold_in(key, STREAM_TRAIN),
                         ckpt_path=os.path.join(workdir, "checkpoint.msgpack"), eval_data=eval_data,
                         on_epoch_end=on_epoch_end, meta=meta, dp=dp_config)
    test_accuracy = float(train.evaluate(model, result.state, *eval_data))
    models.save_model(os.path.join(workdir, "model"), model, train.variables_of(result.state),
                      input_shape=ds.image_shape,
                      meta=model_meta(ds, config, seed=seed, num_train=len(x_train), test_accuracy=test_accuracy,
                                      dp=dp_record))
  else:
    wd.save_npy(os.path.join(workdir, "keep.npy"), keep)
    result = train.train_k(model, config, x_train, y_train, keep, jax.random.fold_in(key, STREAM_TRAIN),
                           chunk_size=chunk_size, workdir=workdir, eval_data=eval_data,
                           on_epoch_end=on_epoch_end, meta=meta, model_axis=model_axis, dp=dp_config)
    test_accuracy = [float(a) for a in train.evaluate(model, result.state, *eval_data, num_models=num_models,
                                                      model_axis=model_axis)]
    variables = train.variables_of(result.state)
    for k in range(num_models):
      models.save_model(os.path.join(workdir, f"model_{k}"), model, jax.tree.map(lambda v: v[k], variables),
                        input_shape=ds.image_shape,
                        meta=model_meta(ds, config, seed=seed, num_train=int(keep[k].sum()),
                                        test_accuracy=test_accuracy[k], model_index=k, keep="keep.npy",
                                        dp=dp_record))
  out = dict(test_accuracy=test_accuracy, num_params=num_params, train_images_per_sec=result.train_images_per_sec,
             compile_seconds=result.compile_seconds, wall_seconds=time.time() - t_start,
             arch=model.name, dataset=ds.name, num_models=num_models, epochs=config.num_epochs,
             backend=jax.default_backend(), device=str(jax.devices()[0].device_kind), dp=dp_record,
             steps=int(np.max(result.state.step)))
  write_json(os.path.join(workdir, "results.json"), out)
  accs = test_accuracy if isinstance(test_accuracy, list) else [test_accuracy]
  names = ["test_accuracy"] if num_models == 1 else [f"test_accuracy_model_{k}" for k in range(num_models)]
  results.write_jsonl(os.path.join(workdir, "results.jsonl"),
                      [results.row(metric=m, value=a, seed=seed, data_source=ds.source) for m, a in zip(names, accs)])
  log(f"test accuracy {np.mean(test_accuracy):.4f}; results in {os.path.join(workdir, 'results.json')}")
  return out
