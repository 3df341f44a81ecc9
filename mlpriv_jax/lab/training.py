"""Train one model, or K at once, on a named dataset into a workdir (what experiments/train.py runs).

The workdir receives `config.json`, `metrics.jsonl` (one line per epoch), checkpoints (for resuming only),
`results.jsonl` (the flat rows of `mlpriv_jax.results`), `results.json` (the run and its rows' summary), `keep.npy`
(K > 1), and the model artifact: `model/` for one model, `model_<k>/` for each of K.
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from mlpriv_jax import data, hosts, models, results, streams, train
from mlpriv_jax.errors import UserError, integer, number
from mlpriv_jax import workdir as wd
from mlpriv_jax.utils import append_jsonl, write_json

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


@dataclasses.dataclass(frozen=True)
class TrainRun:
  """One model, or K at once, trained on a named dataset (train.py's flags spell it)."""
  dataset: str
  arch: str
  train: train.TrainConfig
  num_train: int = 0                   # the first num_train training images (0: all)
  num_models: int = 1                  # K models at once (train_k)
  keep_fraction: float = 1.0           # with K > 1: the fraction of the data each model keeps (0.5: LiRA's masks)
  chunk_size: Optional[int] = None     # with K > 1: models per compiled step
  model_axis: str = "auto"             # how K models share a step: auto, vmap, unroll
  dtype: str = "float32"               # compute dtype (parameters stay float32)
  dropout_rate: float = 0.0            # WRN dropout
  dp: Optional[object] = None          # a `dp.DPTarget`: trained with DP-SGD (batch_size: the expected batch)
  seed: int = 0

  def validate(self):
    integer(self.num_models, "num_models")
    integer(self.num_train, "num_train", at_least=0)
    number(self.keep_fraction, "keep_fraction", above=0, at_most=1)
    if self.chunk_size is not None:
      integer(self.chunk_size, "chunk_size")
    if self.model_axis not in ("auto", "vmap", "unroll"):
      raise UserError(f"model_axis must be auto, vmap or unroll, got {self.model_axis!r}")
    if self.dtype not in ("float32", "bfloat16"):
      raise UserError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
    number(self.dropout_rate, "dropout_rate", at_least=0, at_most=0.99)
    models.canonical_name(self.arch)  # an unknown name fails before any data is loaded
    self.train.validate()
    return self


@wd.releases
def run(cfg: TrainRun, *, workdir: str, data_dir: Optional[str] = None, run_config: Optional[dict] = None,
        log: Callable = print) -> dict:
  """Trains, evaluates and writes everything into `workdir`; returns results.json's content.

  With `cfg.dp`, DP-SGD: results.json's `dp` holds the accounted guarantee. run_config: extra entries for
  config.json (e.g. the preset); a rerun with the same workdir resumes.
  """
  t_start = time.time()
  cfg.validate()
  config, seed, num_models = cfg.train, cfg.seed, cfg.num_models
  ds, x_train, y_train = load_train_split(cfg.dataset, data_dir, seed, cfg.num_train)
  # Under DP the input normalisation is public (CIFAR's constants): the private data's statistics would be an
  # un-noised release inside the model.
  mean, std = data.channel_stats(x_train) if cfg.dp is None else (models.CIFAR_MEAN, models.CIFAR_STD)
  model = models.get_model(cfg.arch, ds.num_classes, mean=mean, std=std, dropout_rate=cfg.dropout_rate,
                           dtype=cfg.dtype)
  num_params = models.count_params(model, (1, *ds.image_shape))
  key = jax.random.key(seed)
  keep = None
  if num_models > 1:
    keep = np.asarray(train.balanced_keep(streams.derive(key, streams.KEEP), num_models, len(x_train),
                                          cfg.keep_fraction))
  dp_config, dp_record = None, None
  if cfg.dp is not None:
    from mlpriv_jax import dp
    dp.check_dp_model(model)
    counts = keep.sum(1) if keep is not None else [len(x_train)]
    dp_config, dp_record = dp.calibrate_training(cfg.dp, counts=counts, batch_size=config.batch_size,
                                                 num_epochs=config.num_epochs)
    log(dp.describe(dp_record))
  record = dict(run_config or {}, seed=seed, num_models=num_models, keep_fraction=cfg.keep_fraction, dtype=cfg.dtype,
                dropout_rate=cfg.dropout_rate, arch=model.name, dataset=ds.name, data_source=ds.source,
                num_train=len(x_train), num_classes=ds.num_classes, mean=mean, std=std,
                image_shape=list(ds.image_shape), train_config=dataclasses.asdict(config), dp=dp_record)
  # what the run is; the normalisation and the image shape follow from it
  if hosts.count() > 1 and num_models == 1:
    raise UserError(f"a launch of {hosts.count()} processes splits K models (--num_models > 1); one model trains "
                    f"on one process")
  hosts.agree("train", record)
  hosts.on_writer("the workdir's claim", lambda: wd.claim(
      workdir, "train", record, identity=[k for k in record if k not in ("mean", "std", "image_shape")]))
  log(f"{model.name}: {num_params:,} parameters; {ds.name} ({ds.source}): {len(x_train)} train, "
      f"{len(ds.x_test)} test images; {config.num_epochs} epochs on {jax.default_backend()}")

  metrics_path = os.path.join(workdir, "metrics.jsonl")

  def on_epoch_end(record):
    if hosts.writer():   # the others of a multi-process launch only log
      append_jsonl(metrics_path, record)
    acc = record.get("test_accuracy")
    acc = f"{np.mean(acc):.4f}" if acc is not None else "-"
    log(f"epoch {record['epoch']:4d}/{config.num_epochs} models {record['models']} "
        f"loss {record['train_loss']:.4f} test_acc {acc} {record['images_per_sec']:.0f} img/s")

  meta = dict(dataset=ds.name, seed=seed)
  eval_data = (ds.x_test, ds.y_test)
  if num_models == 1:
    result = train.train(model, config, x_train, y_train, streams.derive(key, streams.TRAIN),
                         ckpt_path=os.path.join(workdir, "checkpoint.msgpack"), eval_data=eval_data,
                         on_epoch_end=on_epoch_end, meta=meta, dp=dp_config)
    test_accuracy = float(train.evaluate(model, result.state, *eval_data))
    models.save_model(os.path.join(workdir, "model"), model, train.variables_of(result.state),
                      input_shape=ds.image_shape,
                      meta=model_meta(ds, config, seed=seed, num_train=len(x_train), test_accuracy=test_accuracy,
                                      dp=dp_record))
  else:
    chunk = hosts.chunk_size(num_models, cfg.chunk_size, workdir)
    fit = lambda index, count: train.train_k(
        model, config, x_train, y_train, keep, streams.derive(key, streams.TRAIN), chunk_size=chunk,
        workdir=workdir, eval_data=eval_data, on_epoch_end=on_epoch_end, meta=meta,
        model_axis=cfg.model_axis, dp=dp_config, process_index=index, process_count=count)
    result = hosts.fan_out(fit, "train", log)   # each process its chunks, then process 0 alone reads them all
    if result is None:
      return {}
    wd.save_npy(os.path.join(workdir, "keep.npy"), keep)
    test_accuracy = [float(a) for a in train.evaluate(model, result.state, *eval_data, num_models=num_models,
                                                      model_axis=cfg.model_axis)]
    variables = train.variables_of(result.state)
    for k in range(num_models):
      models.save_model(os.path.join(workdir, f"model_{k}"), model, jax.tree.map(lambda v: v[k], variables),
                        input_shape=ds.image_shape,
                        meta=model_meta(ds, config, seed=seed, num_train=int(keep[k].sum()),
                                        test_accuracy=test_accuracy[k], model_index=k, keep="keep.npy",
                                        dp=dp_record))
  accs = test_accuracy if isinstance(test_accuracy, list) else [test_accuracy]
  names = ["test_accuracy"] if num_models == 1 else [f"test_accuracy_model_{k}" for k in range(num_models)]
  figures = dict(zip(names, accs), num_params=num_params, train_images_per_sec=result.train_images_per_sec,
                 compile_seconds=result.compile_seconds, wall_seconds=time.time() - t_start,
                 steps=int(np.max(result.state.step)))
  rows = [results.row(metric=m, value=v, family="training", seed=seed, data_source=ds.source)
          for m, v in figures.items()]
  out = dict(arch=model.name, dataset=ds.name, num_models=num_models, epochs=config.num_epochs,
             backend=jax.default_backend(), device=str(jax.devices()[0].device_kind), dp=dp_record,
             **results.summary(rows, by=()))
  if num_models > 1:   # the K accuracies as one list, from their rows
    out["test_accuracy"] = [out[n] for n in names]
  write_json(os.path.join(workdir, "results.json"), out)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), rows)
  log(f"test accuracy {np.mean(test_accuracy):.4f}; results in {os.path.join(workdir, 'results.json')}")
  return out
