"""The programs' bodies: each `run(cfg, *, workdir, ...)` loads, composes the experiment core (`mlpriv_jax.games`)
and writes one workdir; it reads no flags (experiments/*.py turn flags into its typed config).

training (train.py), defend (defend.py), extraction (extract.py), membership (mia.py), tables (survey_tables.py),
serving (serve.py); recipes: the published training recipes the `paper` presets use.
"""
