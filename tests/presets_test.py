"""Presets are typed configs that carry their evidence: every preset validates, its evidence block states what its
JSON measured, and the pages rendered from them (docs/results.md, README's table) are current."""

import inspect
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from mlpriv_jax import config, presets
from mlpriv_jax.errors import UserError

ALL = [(program, name) for program in presets.PROGRAMS for name in presets.presets(program)]


@pytest.mark.parametrize("program,name", ALL)
def test_every_preset_is_a_valid_config_with_evidence(program, name):
  fn = presets.presets(program)[name]
  cfg = fn()
  cfg.validate()
  assert config.build(type(cfg), config.as_dict(cfg)) == cfg   # config.json's record of it builds it again
  ev = presets.evidence(fn)
  if "unmeasured" in ev:
    assert ev["unmeasured"], (program, name)
    return
  assert set(ev) == {"command", "machine", "wall", "headline", "result"}, ev
  assert ev["command"].startswith(f"python experiments/{program}.py --preset={name} "), ev["command"]
  rec = presets.measured(fn)
  # the docstring states exactly what the JSON holds, so neither can drift from the other
  assert (rec["program"], rec["preset"], rec["command"]) == (program, name, ev["command"])
  assert ev["machine"] == rec["machine"] and ev["headline"] == rec["headline"]
  assert ev["wall"] == f"{rec['wall_seconds']:.0f} s"
  assert ev["result"] == f"benchmarks/results/presets/{program}_{name}.json ({rec['commit']}, {rec['date']})"


def test_no_other_figure_in_a_preset_docstring():
  """A wall time, a throughput or a ratio in a preset's prose (beside its evidence) would be a figure nobody
  re-measures: those live in the evidence block alone."""
  for program in presets.PROGRAMS:
    for name, fn in presets.presets(program).items():
      prose = inspect.getdoc(fn).split("Evidence:")[0]
      timings = re.findall(r"\d[\d,.]*\s*(?:s\b|min\b|minutes|hours?\b|img/s|x\b)", prose)
      assert not timings, (program, name, timings)


def test_configs_refuse_unknown_fields_by_name():
  cfg = presets.get("arena", "smoke")
  with pytest.raises(UserError, match="unknown config field 'membership.options.label_noise.samples'"):
    config.replace(cfg, {"membership.options.label_noise.samples": 3})
  with pytest.raises(UserError, match="unknown field 'num_epoch' in surrogate; its fields: num_epochs"):
    config.build(type(presets.get("survey_tables", "smoke")), dict(
        config.as_dict(presets.get("survey_tables", "smoke")), surrogate=dict(num_epoch=3)))
  same = config.replace(cfg, {"game.train.num_epochs": 3})
  assert same.game.train.num_epochs == 3 and same.membership == cfg.membership
  with pytest.raises(UserError, match="unknown preset 'tiny' of arena"):
    presets.get("arena", "tiny")


def test_mia_and_the_arena_spell_the_game_alike():
  """The same typed records under the same names: a flag path of mia.py is one of the arena's."""
  mia, arena = presets.get("mia", "smoke"), presets.get("arena", "smoke")
  for field in ("game", "membership", "dp_game"):
    assert type(getattr(mia, field)) is type(getattr(arena, field)), field
  assert type(presets.get("extract", "smoke").extraction) is type(arena.extraction)


def test_results_page_and_readme_are_current():
  p = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "render_results.py"), "--check"],
                     capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"))
  assert p.returncode == 0, p.stderr


def test_options_records_hold_one_record_per_registered_attack():
  """MembershipOptions and ExtractionOptions spell the registries: a field per attack, of the attack's own options
  type, so an attack added to a registry without its options (or with another's) fails here."""
  import dataclasses
  import typing
  from mlpriv_jax.attacks import extraction as E
  from mlpriv_jax.attacks import membership as M
  for options, registry in ((M.MembershipOptions, M.REGISTRY), (E.ExtractionOptions, E.REGISTRY)):
    hints = typing.get_type_hints(options)
    assert [f.name for f in dataclasses.fields(options)] == list(registry)
    for name, attack in registry.items():
      assert hints[name] is attack.options and isinstance(options().of(name), attack.options), name
  with pytest.raises(UserError, match="no options for attack 'lira'"):
    M.MembershipOptions().of("lira")


def test_the_gpu_tables_recipe_is_what_its_docstring_states():
  """survey_tables' gpu preset lists its recipe line by line (`victim.batch_size: 512`); each line is the config's
  value, and every field that differs from the paper preset's is listed (nothing changed silently)."""
  from mlpriv_jax.presets import survey_tables
  doc = inspect.getdoc(survey_tables.gpu)
  block = doc.split("Recipe (", 1)[1].split("\n\n", 1)[0]
  stated = dict(re.findall(r"^  ([\w.]+): (.+)$", block, re.M))
  cfg, paper = survey_tables.gpu(), survey_tables.paper()
  assert len(stated) >= 10, stated

  def value(c, path):
    for part in path.split("."):
      c = getattr(c, part)
    return c

  for path, text in stated.items():
    got = value(cfg, path)
    assert str(got) == text or (isinstance(got, (int, float)) and float(text) == got), (path, text, got)
  differs = {f"{part}.{f}" for part in ("victim", "surrogate") for f in config.as_dict(getattr(cfg, part))
             if value(cfg, f"{part}.{f}") != value(paper, f"{part}.{f}")}
  differs |= {f for f in ("dtype", "checkpoint_every_s", "lr_by_arch", "budget", "num_train", "archs", "query_set")
              if getattr(cfg, f) != getattr(paper, f)}
  unstated = differs - set(stated) - {f"{p}.{f}" for p in ("victim", "surrogate")
                                      for f in ("milestones_epochs", "lr_decay_factor")}   # unused by cosine
  assert not unstated, unstated
  assert (cfg.budget, cfg.num_train, cfg.query_set, cfg.archs) == (50000, 0, "cifar100", paper.archs)
