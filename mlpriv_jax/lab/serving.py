"""A victim artifact behind its defence, made ready to serve (what experiments/serve.py runs).

One `Service` (the model and its defence, compiled once per batch bucket) and one account per key of the keys
file: its budget, its PRADA monitor (with `monitor="prada"`), its defence state and key stream.
"""

from typing import Callable, Optional

import jax

from mlpriv_jax import defences, models, streams
from mlpriv_jax.defences import dawn
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.games import victims
from mlpriv_jax.oracle import BUCKETS, Service


def build(*, victim: str, keys_file: str, defence: str = "none", strength: Optional[float] = None,
          budget_per_key: Optional[int] = 50000, model_name: str = "victim", monitor: str = "none",
          prada_delta: float = 0.9, on_detect: str = "refuse", disclose_defence: bool = False,
          max_body_bytes: int = 4 << 20, buckets=BUCKETS, data_dir: Optional[str] = None, num_guard: int = 500,
          guard_steps: int = 500, seed: int = 0, ledger: Optional[str] = None, body_timeout: float = 30.0,
          dawn_key_file: Optional[str] = None, log: Callable = print):
  """The `serve.Served` state of the artifact at `victim` (checked in full before anything is compiled).

  dawn_key_file: DAWN's master secret (`defences.dawn.read_master`), which `--defence=dawn` requires: each key's
  watermark is keyed by it, never by the public seed.
  ledger: the SQLite file of every key's usage (default: `<keys_file>.usage.sqlite`, beside the keys file), so
  that a restart, or another server on the same file, continues each key's count."""
  from mlpriv_jax import serve
  if budget_per_key is not None:
    integer(budget_per_key, "--budget_per_key", at_least=0)
  if monitor not in ("none", "prada"):
    raise UserError(f"--monitor must be none or prada, got {monitor!r}")
  if not model_name or "/" in model_name or ":" in model_name:
    raise UserError(f"--model_name must be a non-empty name without '/' or ':', got {model_name!r}")
  spec = defences.check(defence, strength)
  if spec.strength is not None and strength is None:
    raise UserError(f"--defence={defence} needs --strength ({spec.strength}, {spec.valid_text})")
  strength = strength if spec.strength is not None else None
  master = None
  if "master" in spec.needs:
    if not dawn_key_file:
      raise UserError(f"--defence={defence} needs --dawn_key_file, the watermark's master secret: JSON "
                      f"{dawn.KEY_FILE_FORM}")
    master = dawn.read_master(dawn_key_file)
  elif dawn_key_file:
    raise UserError(f"--dawn_key_file is DAWN's secret; --defence={defence} takes none")
  keyring = serve.load_keys(keys_file, budget_per_key)
  ledger = serve.Ledger(ledger or default_ledger(keys_file))
  monitor_factory = None
  if monitor == "prada":
    defences.Prada(delta=prada_delta)   # checks delta
    monitor_factory = lambda: defences.Prada(delta=prada_delta)
  key = streams.branch(jax.random.key(seed), streams.DEFENDER)   # each key's account: `serve.client_key`
  members = nonmembers = None
  if "members" in spec.needs:   # MemGuard: its classifier is trained on the victim's members and test images
    v = victims.load(victim, data_dir)
    model, variables, meta = v.model, v.variables, v.meta
    members, nonmembers = v.member_images(num_guard), v.dataset.x_test[:num_guard]
  else:
    model, variables, meta = models.load_model(victim)
  input_shape = tuple(meta.get("input_shape") or ())
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise UserError(f"{meta['artifact']}: the protocol describes images [B, H, W, C]; the artifact's input "
                    f"shape is {list(input_shape)}")
  kit = defences.assemble([defence], model, key, variables=variables, input_shape=input_shape, members=members,
                          nonmembers=nonmembers, guard_steps=guard_steps, log=log)
  if master is not None:
    kit = kit._replace(watermark_master=master)
  d = defences.build(defence, strength, **kit._asdict())
  service = Service.from_model(model, variables, input_shape=input_shape, defence=d, buckets=buckets,
                               max_traces=len(buckets))
  served = serve.Served(service, keyring, model_name=model_name, seed=seed, monitor_factory=monitor_factory,
                        on_detect=on_detect, disclose_defence=disclose_defence, defence=defence,
                        defence_strength=strength, max_body_bytes=max_body_bytes, ledger=ledger,
                        body_timeout=body_timeout)
  log(f"serving {model.name} ({meta['artifact']}) as {model_name!r} behind {d.name}"
      + (f" {strength:g}" if strength is not None else "") + f" to {len(keyring.clients)} keys"
      + (", PRADA monitor" if monitor_factory else "") + f"; usage in {ledger.path}")
  return served


def default_ledger(keys_file: str) -> str:
  """Where the keys' usage is kept unless told: beside the keys file (their limits), `<keys_file>.usage.sqlite`."""
  return keys_file + ".usage.sqlite"
