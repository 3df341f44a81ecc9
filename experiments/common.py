"""What every absl program shares: the flags defined once, the one preset mechanism, one-line errors.

A program's presets are typed configs (`mlpriv_jax.presets.<program>`); it defines its flags with `define_*` and
reads `config(program, {flag: path})`: the preset `--preset` names, with each flag the user gave written to its
field (`game.train.num_epochs`).
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
TRAIN_FLAGS = ("num_epochs", "batch_size", "learning_rate", "momentum", "nesterov", "weight_decay", "schedule",
               "milestones_epochs", "lr_decay_factor", "augment", "warmup_epochs", "label_smoothing")


def define_base(program: str, *, workdir_help: str = "Output folder; a rerun with the same folder resumes.") -> None:
  """--preset (the program's presets), --workdir, --data_dir, --seed."""
  from mlpriv_jax import presets
  flags.DEFINE_enum("preset", "smoke", list(presets.NAMES), f"Scale of the run (mlpriv_jax.presets.{program}); "
                    "explicit flags override it.")
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.DEFINE_string("data_dir", None, "Folder with <dataset>.npz files (else $MLPRIV_DATA_DIR, else TFDS).")
  flags.DEFINE_integer("seed", 0, "Root seed: every key is a stream of key(seed) (mlpriv_jax.streams).")


def define_train_flags(what: str = "the model") -> None:
  """One flag per TrainConfig field, each defaulting to the preset's value."""
  flags.DEFINE_integer("num_epochs", None, f"Epochs of {what}.")
  flags.DEFINE_integer("batch_size", None, f"Images per step of {what} (per model).")
  flags.DEFINE_float("learning_rate", None, f"Peak learning rate of {what}.")
  flags.DEFINE_float("momentum", None, "SGD momentum.")
  flags.DEFINE_boolean("nesterov", None, "Nesterov momentum.")
  flags.DEFINE_float("weight_decay", None, "Coupled (PyTorch-style) weight decay.")
  flags.DEFINE_enum("schedule", None, ["multistep", "cosine", "constant"], "Learning-rate schedule.")
  flags.DEFINE_string("milestones_epochs", None, "Comma-separated epochs of the multistep decays.")
  flags.DEFINE_float("lr_decay_factor", None, "Multistep decay factor.")
  flags.DEFINE_boolean("augment", None, "Reflect-pad-4 crop and horizontal flip while training.")
  flags.DEFINE_float("warmup_epochs", None, "Linear learning-rate warm-up from 0, in epochs.")
  flags.DEFINE_float("label_smoothing", None, "Train against (1 - e) y + e / C (0: the labels as they are).")


def define_dp_flags(what: str = "the model") -> None:
  """DP-SGD (Abadi et al. 2016): --dp_epsilon turns it on for {what}."""
  flags.DEFINE_float("dp_epsilon", None, f"Train {what} with DP-SGD to this epsilon (inf: clipping, no noise); "
                     "needs a GroupNorm model (e.g. cnn_small_gn). Default: no DP.")
  flags.DEFINE_float("dp_delta", 1e-5, "DP-SGD: delta, below 1/n.")
  flags.DEFINE_float("dp_clip_norm", 1.0, "DP-SGD: per-example L2 clip norm C.")
  flags.DEFINE_integer("dp_augmult", 1, "DP-SGD: augmented views per example, gradients averaged before clipping.")
  flags.DEFINE_enum("dp_accountant", "pld", ["pld", "rdp"], "DP-SGD: dp-accounting's accountant.")


def define_host_flags() -> None:
  """A multi-process launch (`mlpriv_jax.hosts`): under SLURM or Open MPI nothing to give; elsewhere the three
  flags name the coordinator and this process."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a launch of several processes "
                      "(127.0.0.1:<port> on one machine); not needed under SLURM or Open MPI.")
  flags.DEFINE_integer("num_processes", None, "Processes of the launch (each trains its share of the K models).")
  flags.DEFINE_integer("process_id", None, "This process, in [0, --num_processes): 0 writes the results.")
  flags.DEFINE_float("coordinator_timeout", 300, "Seconds a process waits for the coordinator (and process 0 for "
                     "the others) before it stops with an error.")


def define_endpoint_flags(what: str) -> None:
  """--victim_url and how to read the model served there (`serve.Endpoint`): {what} is what the URL is for."""
  flags.DEFINE_string("victim_url", None, what)
  flags.DEFINE_string("api_key", None, "API key for --victim_url, sent as a bearer token (default: $MLPRIV_API_KEY, "
                      "which keeps it out of the process list; none: no Authorization header).")
  flags.DEFINE_string("model_name", None, "Model name at --victim_url (default: the server's one model).")
  flags.DEFINE_string("input_name", None, "The model's input to send images to (default: its one input).")
  flags.DEFINE_string("output_name", None, "The model's output to read (default: its one output).")
  flags.DEFINE_enum("output_kind", "auto", ["auto", "probabilities", "logits", "labels"],
                    "How to read the output: probabilities, logits (softmax applied), labels (one-hot; needs "
                    "--num_classes); auto: floats are probabilities, integers labels.")
  flags.DEFINE_integer("num_classes", None, "Classes of a model whose output is labels.")


def endpoint():
  """The `serve.Endpoint` of the --victim_url flags, or None without --victim_url."""
  import os
  if not FLAGS.victim_url:
    for name in ("model_name", "input_name", "output_name", "num_classes"):
      if FLAGS[name].present:
        from mlpriv_jax.errors import UserError
        raise UserError(f"--{name} describes the model at --victim_url: give --victim_url too")
    return None
  from mlpriv_jax.serve.client import Endpoint
  return Endpoint(FLAGS.victim_url, FLAGS.api_key or os.environ.get("MLPRIV_API_KEY"), FLAGS.model_name,
                  FLAGS.input_name, FLAGS.output_name, FLAGS.output_kind, FLAGS.num_classes)


def dp_target():
  """The DPTarget of the --dp_* flags, or None without --dp_epsilon."""
  if FLAGS.dp_epsilon is None:
    for name in ("dp_delta", "dp_clip_norm", "dp_augmult", "dp_accountant"):
      if FLAGS[name].present:
        from mlpriv_jax.errors import UserError
        raise UserError(f"--{name} is a DP-SGD setting: give --dp_epsilon too")
    return None
  from mlpriv_jax import dp
  return dp.DPTarget(FLAGS.dp_epsilon, FLAGS.dp_delta, FLAGS.dp_clip_norm, FLAGS.dp_augmult, FLAGS.dp_accountant)


def given(name: str) -> bool:
  """Whether the user set flag `name` (on the command line, or to a value other than its None default)."""
  f = FLAGS[name]
  return f.present or (f.default is None and f.value is not None)


def train_paths(prefix: str) -> dict:
  """{flag: path} of the TrainConfig flags into the TrainConfig at `prefix` (e.g. game.train)."""
  return {name: (f"{prefix}.{name}", _milestones if name == "milestones_epochs" else None) for name in TRAIN_FLAGS}


def _milestones(text) -> tuple:
  from mlpriv_jax.errors import UserError
  try:
    return tuple(int(m) for m in str(text).split(",") if m.strip())
  except ValueError:
    raise UserError(f"--milestones_epochs must be comma-separated epochs, got {text!r}") from None


def config(program: str, paths: dict, base=None):
  """The preset `--preset` of `program` (or `base`), each given flag of `paths` written to its field.

  paths: {flag: path} or {flag: (path, convert)}; a path is dotted (`game.train.num_epochs`), convert turns the
  flag's value into the field's (None: as is)."""
  from mlpriv_jax import config as configs
  from mlpriv_jax import presets
  cfg = presets.get(program, FLAGS.preset) if base is None else base
  overrides = {}
  for name, target in paths.items():
    if given(name):
      path, convert = target if isinstance(target, tuple) else (target, None)
      overrides[path] = convert(FLAGS[name].value) if convert else FLAGS[name].value
  return configs.replace(cfg, overrides)


def parse_floats(text, what: str) -> list:
  from mlpriv_jax.errors import UserError
  try:
    return [float(v) for v in str(text).split(",") if v.strip()]
  except ValueError:
    raise UserError(f"{what} must be comma-separated numbers, got {text!r}") from None


def run(main):
  """app.run(main), with bad input (a UserError: a wrong value, a missing dataset or artifact, a foreign
  checkpoint) and a missing file reported as one line on stderr and exit status 2. Anything else is a bug
  and keeps its traceback."""
  def guarded(argv):
    from absl import logging
    from mlpriv_jax.errors import UserError
    logging.set_verbosity(logging.WARNING)  # hides JAX's "no TPU found" INFO line
    try:
      if "num_processes" in FLAGS:   # before anything touches a JAX backend
        from mlpriv_jax import hosts
        hosts.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                         timeout_s=FLAGS.coordinator_timeout)
      return main(argv)
    except (UserError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    except KeyboardInterrupt:
      print("interrupted: the last finished epoch is checkpointed; rerun with the same --workdir to resume",
            file=sys.stderr, flush=True)
      sys.exit(130)
  def parse(argv):
    try:
      return FLAGS(argv)
    except flags.Error as e:   # an unknown flag or a value of the wrong type: one line too
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
  app.run(guarded, flags_parser=parse)


def log(message: str) -> None:
  print(message, flush=True)
