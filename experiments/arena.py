r"""The arena: every attack against every defence at every strength and budget, one command, one report.

  python experiments/arena.py --preset=smoke --workdir=runs/arena          # embedded data
  python experiments/arena.py --preset=smoke --workdir=runs/arena --collate_only   # the report from the cells
  python experiments/arena.py --preset=cpu --data_dir=../shared/data --workdir=runs/arena_cpu   # real CIFAR

One victim (a membership game: the victim trains on half of --num_examples, the attacker's shadows on balanced
halves) behind each defence setting, and a DP-SGD victim per --dp_epsilons; every membership attack and every
extraction attack at every budget and surrogate; PRADA's queries-to-flag per extraction stream. Each measurement is
a cell file under <workdir>/cells/ (a rerun computes only the missing ones). The report: arena.json, cells.csv,
report.md and report.html (plots embedded) in the workdir; see `mlpriv_jax.arena.scoring` for how a defence is
judged (its worst attack per family; dominated settings). Presets: `mlpriv_jax.presets.arena`, each with its
measured wall and headline.

--defences takes names, with strengths after a colon: `label,round2,revsig:0.5/1,mad_argmax:0.5,memguard:1`.

Several processes or hosts (`--coordinator_address --num_processes --process_id`, or SLURM / Open MPI; docs/hosts.md)
share every victim's game (its K + 1 models); process 0 then computes the cells and writes the report.

A deployed victim: after a first run has trained it, serve it and add its row (every attack through HTTP):
  python experiments/serve.py --victim=runs/arena/victim/target --keys_file=keys.json --defence=... &
  MLPRIV_API_KEY=... python experiments/arena.py --preset=smoke --workdir=runs/arena --victim_url=http://127.0.0.1:8000
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import common  # noqa: E402

common.define_base("arena", workdir_help="Output folder; a rerun computes only the missing cells.")
flags.DEFINE_string("defences", None, "Defences with strengths: name or name:s1/s2 (none is always in).")
flags.DEFINE_string("membership_attacks", None, "Membership attacks, comma-separated ('' for none).")
flags.DEFINE_string("extraction_attacks", None, "Extraction attacks, comma-separated ('' for none).")
flags.DEFINE_string("budgets", None, "Extraction budgets (queries), comma-separated.")
flags.DEFINE_string("surrogates", None, "Surrogate architectures, comma-separated.")
flags.DEFINE_string("surrogate_init", None, "A pretrained extractor (a model artifact: experiments/train.py on the "
                    "attacker's labelled pool): each surrogate also runs on its frozen body (`<arch>+pretrained`, "
                    "only a new head trains) beside the one from scratch.")
flags.DEFINE_enum("surrogate_tune", None, ["head", "last_block"], "What trains on the pretrained extractor: its "
                  "new head (CloudLeak's; the default) or also its last block, from the extractor's weights.")
flags.DEFINE_string("dp_epsilons", None, "Epsilons of the DP-SGD victims ('' for none).")
flags.DEFINE_string("ownership", None, "The owner's verifiers run on every surrogate, comma-separated "
                    "(dataset_inference, ipguard, dawn; '' for none): the ownership family.")
flags.DEFINE_integer("num_independent", None, "The ownership family's negatives: independent models of the victim's "
                     "recipe on disjoint data.")
flags.DEFINE_integer("num_examples", None, "The membership universe (the victim trains on half).")
flags.DEFINE_integer("num_shadows", None, "The attacker's shadow models.")
flags.DEFINE_boolean("monitor", None, "Measure PRADA's queries-to-flag on each extraction stream.")
flags.DEFINE_boolean("collate_only", False, "Rebuild the report from the cells; compute nothing.")
common.define_host_flags()
common.define_endpoint_flags("Add the setting `served`: the arena's victim as served at this URL "
                             "(experiments/serve.py --victim=<workdir>/victim/target, behind the server's own "
                             "defence, or any Open Inference Protocol v2 server of the same model).")
FLAGS = flags.FLAGS


def _names(text):
  return tuple(n.strip() for n in str(text).split(",") if n.strip())


def _defences(text):
  from mlpriv_jax.errors import UserError
  out = []
  for item in _names(text):
    name, _, strengths = item.partition(":")
    try:
      out.append((name, tuple(float(s) for s in strengths.split("/") if s)))
    except ValueError:
      raise UserError(f"--defences: strengths of {name} must be numbers separated by '/', got {strengths!r}") from None
  return tuple(out)


def main(argv):
  del argv
  from mlpriv_jax import config as configs
  from mlpriv_jax.arena import run
  from mlpriv_jax.games.extraction import pretrained_surrogates
  floats = lambda what: (lambda t: tuple(common.parse_floats(t, what)))
  cfg = common.config("arena", dict(
      defences=("defences", _defences), membership_attacks=("membership.attacks", _names),
      extraction_attacks=("extraction.attacks", _names),
      budgets=("extraction.budgets", lambda t: tuple(int(b) if b == int(b) else b
                                                     for b in common.parse_floats(t, "--budgets"))),
      surrogates=("extraction.surrogates", _names), surrogate_init=("extraction.surrogate_init", os.path.abspath),
      surrogate_tune="extraction.surrogate_tune",
      dp_epsilons=("dp_epsilons", floats("--dp_epsilons")),
      ownership=("ownership.verifiers", _names), num_independent="ownership.num_independent",
      num_examples="game.num_examples", num_shadows="game.num_shadows", monitor="monitor", seed="game.seed"))
  if common.given("surrogate_init"):   # each surrogate from scratch and on the extractor, side by side
    names = cfg.extraction.surrogates
    cfg = configs.replace(cfg, {"extraction.surrogates": tuple(dict.fromkeys(names + pretrained_surrogates(names)))})
  run.run(cfg, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, collate_only=FLAGS.collate_only,
          run_config=dict(preset=FLAGS.preset), endpoint=common.endpoint(), log=common.log)


if __name__ == "__main__":
  common.run(main)
