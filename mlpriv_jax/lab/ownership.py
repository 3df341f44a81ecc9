"""The owner's verdict on one suspect (what experiments/verify.py runs): after a theft, is this model a copy of my
victim? The victim is a model artifact that records its training data (train.py, mia.py, the arena), the suspect
any `Oracle` (a model served at a URL, an artifact in process); the verifiers are `games.ownership`'s, their
negatives trained once in the workdir (a rerun resumes them). The verdict is `verdict.json`."""

import dataclasses
import os
from typing import Callable, Optional

from mlpriv_jax import config as configs
from mlpriv_jax import workdir as wd
from mlpriv_jax.errors import UserError, number
from mlpriv_jax.games import ownership
from mlpriv_jax.oracle import Oracle
from mlpriv_jax.utils import write_json


@dataclasses.dataclass(frozen=True)
class VerifyRun:
  audit: ownership.OwnershipAudit
  alpha: float = 0.01   # a verifier calls the suspect stolen when its p-value is below this

  def validate(self):
    self.audit.validate()
    if not self.audit.verifiers:
      raise UserError("no verifier to run; known: " + ", ".join(ownership.VERIFIERS))
    if not number(self.alpha, "alpha", above=0) < 1:
      raise UserError(f"alpha must lie in (0, 1), got {self.alpha}")
    return self


def dawn_evidence(ledger_path: str, client: str):
  """What a served victim behind DAWN logged of the key named `client` (its `--ledger` file)."""
  from mlpriv_jax.ownership import dawn
  from mlpriv_jax.serve.ledger import Ledger
  if not os.path.isfile(ledger_path):
    raise UserError(f"--ledger {ledger_path}: no such file (the ledger of the server that answered the suspect)")
  ledger = Ledger(ledger_path)
  try:
    ev = dawn.from_ledger(ledger, client)
  finally:
    ledger.close()
  if not len(ev.x):
    raise UserError(f"{ledger_path} holds no watermarked answer to the key {client!r}: was it served behind "
                    "--defence=dawn?")
  return ev


@wd.releases
def run(cfg: VerifyRun, *, victim: str, suspect: Oracle, suspect_name: str, workdir: str,
        data_dir: Optional[str] = None, ledger: Optional[str] = None, client: Optional[str] = None,
        run_config: Optional[dict] = None, log: Callable = print) -> dict:
  wd.require(workdir)
  cfg.validate()
  if ("dawn" in cfg.audit.verifiers) != (ledger is not None and client is not None):
    raise UserError("the dawn verifier, and only it, reads the provider's ledger: give --ledger and --client with "
                    "--verifiers=...dawn")
  evidence = dawn_evidence(ledger, client) if ledger is not None else None
  wd.claim(workdir, "verify", dict(run_config or {}, victim=os.path.abspath(victim), suspect=suspect_name,
                                   client=client, run=configs.as_dict(cfg)), identity=("victim", "run"))
  verdict = ownership.verify_artifact(victim, suspect, cfg.audit, data_dir=data_dir, dawn=evidence,
                                      workdir=os.path.join(workdir, "independent"), alpha=cfg.alpha, log=log)
  verdict = dict(verdict, suspect=suspect_name, client=client)
  write_json(os.path.join(workdir, "verdict.json"), verdict)
  for name, r in verdict["verifiers"].items():
    log(f"{name:18s} p = {r['p_value']:.3g}: {'STOLEN' if r['stolen'] else 'not shown stolen'} at alpha "
        f"{cfg.alpha:g} ({r['queries']} queries to the suspect)")
  log(f"verdict in {os.path.join(workdir, 'verdict.json')}")
  return verdict
