"""Many hosts: the K models of a membership game trained by several processes under JAX's multi-controller runtime.

One process per host (or per GPU), every one running the same program with the same flags, joined by
`jax.distributed.initialize` (docs.jax.dev/en/latest/multi_process.html): under SLURM or Open MPI it finds the
coordinator itself; elsewhere the program's `--coordinator_address --num_processes --process_id` name it
(`127.0.0.1:<port>` for processes on one machine). The K models are split into chunks and process p trains the
chunks i with i % P == p (`train.train_k(process_index=, process_count=)`), each writing its chunks' checkpoints
into the one shared workdir; after a barrier process 0 reads every chunk back and goes on alone (the attacks, the
results, the reports); the others stop. The models never communicate, so this fan-out needs no cross-process
computation, only the barriers and the check that every process runs one config: JAX's own advice for independent
models (docs.jax.dev/en/latest/fault_tolerance.html: if one process of a job dies, every other one is stopped).

A rerun after a killed process (or host) trains only what is missing, on any number of processes: the finished
chunks load from their checkpoints, an unfinished one resumes from its last epoch, and a model's keys depend on its
index only (`fold_in(key, k)`), never on the process that trains it.
"""

import hashlib
import json
import math
import os
import re
import socket
import time
from typing import Optional

import jax
import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.workdir import flatten

# What JAX's own cluster detection reads (jax/_src/clusters/slurm_cluster.py, ompi_cluster.py), the task count last.
_ENV_LAUNCHERS = (("SLURM", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")),
                  ("Open MPI", ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")))


def launcher() -> Optional[str]:
  """'SLURM' or 'Open MPI' when this process is one task of several of a launch by it (an `srun` step, an `mpirun`:
  what `jax.distributed` detects itself), else None (a shell inside an allocation is one process)."""
  for name, needed in _ENV_LAUNCHERS:
    if all(os.environ.get(v) for v in needed) and os.environ[needed[-1]].isdigit() and int(os.environ[needed[-1]]) > 1:
      return name
  return None


def _wait_for(address: str, timeout_s: float) -> None:
  """Returns once something listens at host:port, or raises a UserError after `timeout_s` (JAX's own client aborts
  the process, uncatchably, when its coordinator never answers)."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address must be host:port, got {address!r}")
  deadline = time.time() + timeout_s
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
      return
    except OSError:
      if time.time() >= deadline:
        raise UserError(f"no coordinator answered at {address} within {timeout_s:g} s (start process 0 there, or "
                        f"check --coordinator_address)") from None
      time.sleep(0.2)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, timeout_s: float = 300) -> int:
  """Joins this process to the others (`jax.distributed.initialize`) and returns the number of processes.

  All three arguments name the launch; none of them: a SLURM or Open MPI launch of several tasks is detected
  (JAX's own detection), anything else is a single process (nothing to join, returns 1). Must run before anything
  touches a JAX backend. A process other than the coordinator waits at most `timeout_s` for it, then fails with one
  line; the coordinator waits as long for the others (a process that never comes stops it with JAX's own error)."""
  if not (timeout_s > 0 and math.isfinite(timeout_s)):   # NaN fails here too
    raise UserError(f"--coordinator_timeout must be a number of seconds > 0, got {timeout_s:g}")
  seconds = max(1, math.ceil(timeout_s))
  given = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
  if all(v is None for v in given.values()):
    if launcher() is None:
      return 1
    jax.distributed.initialize(initialization_timeout=seconds)
    return jax.process_count()
  missing = [f"--{k}" for k, v in given.items() if v is None]
  if missing:
    raise UserError(f"a multi-process launch needs --coordinator_address, --num_processes and --process_id; "
                    f"missing {', '.join(missing)}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise UserError(f"need --num_processes >= 1 and 0 <= --process_id < --num_processes, got --process_id="
                    f"{process_id} with --num_processes={num_processes}")
  if num_processes == 1:
    return 1
  if process_id != 0:
    _wait_for(coordinator_address, timeout_s)
  jax.distributed.initialize(coordinator_address, num_processes, process_id, initialization_timeout=seconds,
                             cluster_detection_method="deactivate")
  return jax.process_count()


def count() -> int:
  return jax.process_count()


def index() -> int:
  return jax.process_index()


def writer() -> bool:
  """Whether this process writes the results and reports (process 0; the only one of a single-process run)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits for every process to get here (nothing to wait for in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def on_writer(name: str, fn) -> None:
  """Runs `fn()` on process 0 alone, the others waiting; a UserError there is raised on every process (its own
  message on process 0, a line pointing to it on the others), so that none is left waiting at a barrier."""
  error = None
  if writer():
    try:
      fn()
    except UserError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    failed = multihost_utils.process_allgather(np.array([error is not None], np.int32))
    if failed.any() and error is None:
      raise UserError(f"process 0 refused the run at {name} (its error says why); nothing was trained")
  if error is not None:
    raise error


def agree(what: str, config: dict) -> None:
  """Refuses, on every process, a launch whose processes run different configs, naming the fields that differ.

  Each process hashes each field of its (JSON) config; every process's hashes are gathered to all, and each
  compares them with process 0's, so all fail together, before any training."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  fields = flatten(json.loads(json.dumps(config, sort_keys=True, default=str)))
  names = sorted(fields)
  digest = lambda text: np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int64)[0]
  mine = np.array([digest(json.dumps(names))] + [digest(json.dumps(fields[k])) for k in names], np.int64)
  sizes = multihost_utils.process_allgather(np.array([len(mine)], np.int64))
  width = int(sizes.max())
  padded = np.zeros(width, np.int64)
  padded[:len(mine)] = mine
  every = multihost_utils.process_allgather(padded)   # [P, width]
  differ = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
  if not differ:
    return
  if any(every[p][0] != every[0][0] for p in differ):
    detail = "their configs have different fields (another version of the program?)"
  else:
    bad = sorted({names[i - 1] for p in differ for i in np.flatnonzero(every[p] != every[0])})
    detail = f"they differ in {', '.join(bad)}"
  raise UserError(f"the {jax.process_count()} processes of this launch must run one {what} config, but process"
                  f"{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} and process 0 do not: {detail}; "
                  f"nothing was trained")


def chunk_size(num_models: int, given: Optional[int], checkpoints: Optional[str] = None) -> Optional[int]:
  """The models per chunk: `given`; else that of the chunk checkpoints already in `checkpoints` (a workdir's layout
  is fixed by its first run, so a rerun on another number of processes resumes it); else, with several processes,
  ceil(K / P), one chunk each; else None (train_k's default)."""
  if given is not None:
    return given
  if checkpoints and os.path.isdir(checkpoints):
    spans = [re.fullmatch(r"models_(\d+)-(\d+)\.msgpack", f) for f in sorted(os.listdir(checkpoints))]
    spans = [int(m[2]) - int(m[1]) for m in spans if m]
    if spans:
      return spans[0]   # the first chunk is a full one (only the last may be short)
  if jax.process_count() == 1:
    return None
  return math.ceil(num_models / jax.process_count())


def fan_out(fit, what: str, log=print):
  """Trains K models split over the processes: `fit(process_index, process_count)` (a `train.train_k` call with those
  arguments) on this process's chunks, a barrier, then on process 0 `fit(0, 1)` reads every chunk back and its
  result is returned; the other processes return None. A single process just calls `fit(0, 1)`."""
  if jax.process_count() > 1:
    mine = fit(index(), count()).model_ids
    log(f"process {index()} of {count()}: trained models {_spans(mine)}")
    barrier(f"{what} models trained")
    if not writer():
      return None
  return fit(0, 1)


def _spans(ids) -> str:
  """'0-4, 9-11' for the model ids (0, 1, 2, 3, 4, 9, 10, 11)."""
  out = []
  for i in sorted(ids):
    if out and out[-1][1] == i - 1:
      out[-1][1] = i
    else:
      out.append([i, i])
  return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out) or "none"
