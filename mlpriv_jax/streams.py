"""Every random stream of the library, named once (STYLE: keys are typed and addressed by index).

A run has one root, `jax.random.key(seed)`; each stream below is `fold_in(parent, ID)` of the parent its comment
names, and a model, an example, a round or a query is then addressed by its index (`fold_in(stream, k)`). Nothing
outside this table folds in a constant.
"""

import jax

# --- The root of a program ------------------------------------------------------------------------------------
TRAIN, KEEP = 0, 1                 # the models trained (train.py, the membership game) and their keep masks
TARGET_HALF = 2                    # the membership target's half of the universe
MIA_MEMGUARD, MIA_ACCOUNT, MIA_EVAL = 3, 5, 7        # mia.py: MemGuard's classifier, the attacker's, ours
EXTRACT_ACCOUNT, EXTRACT_ATTACK, EXTRACT_DEFENCE = 1, 2, 7   # extract.py
SERVE_DEFENCE = 1                  # serve.py: the defence's making (each key's account: by the key's name)
DEFEND_ACCOUNT = 3                 # defend.py: the account every setting is measured through
TABLE_ACCOUNT, TABLE_QUERIES, TABLE_SURROGATES = 10, 20, 100   # survey_tables.py, + the table's (and row's) index

# --- The arena: game g's branch is fold_in(root, g), then -------------------------------------------------------
ARENA_DEFENCE, ARENA_ATTACKER, ARENA_EXTRACTION, ARENA_EVAL = 11, 12, 13, 14
ARENA_ACCOUNT = 1                  # below ARENA_ATTACKER and ARENA_EXTRACTION: the attacker's accounts

# --- The membership attacker's key ----------------------------------------------------------------------------
SCORE_ATTACKS = 4                  # the score attacks (Shokri's attack models)
QUERY_ATTACKS = 6                  # the query attacks
QUERY_CANDIDATES = 6               # the candidates the query attacks score (a permutation)

# --- What the defender makes once (`defences.assemble`) -------------------------------------------------------
PROXY, GUARD = 1, 2                # MAD's proxy initialisation, MemGuard's defence classifier

# --- Inside attacks and defences (below the key they are given) ------------------------------------------------
KNOCKOFF_QUERIES, KNOCKOFF_TRAIN = 0, 1        # KnockoffNets: the transfer set, the surrogate's training
ADAPTIVE_INIT, ADAPTIVE_STEPS = 1, 2           # KnockoffNets-adaptive's online surrogate
CLOUDLEAK_ORDER = 0                            # CloudLeak's pool order (round r trains with r + 1)
LABEL_TARGET, LABEL_CALIBRATION = 0, 1         # a label-only attack on the target, on the attacker's shadow
HSJ_INIT, HSJ_GRADIENT = 0, 1                  # HopSkipJump's start and its gradient estimates
MEMGUARD_PROJECTION, MEMGUARD_CODES = 0, 1     # MemGuard's tie-breaking projection and per-row codes
MLP_INIT, MLP_BATCHES = 0, 1                   # the attack MLPs' initialisation and batch order

# --- The training engine, below model k's key fold_in(key, k) ---------------------------------------------------
INIT, ORDER, STEP, POISSON = 0, 1, 2, 3        # initialisation, epoch order, step keys, DP-SGD's Poisson draws


def derive(key, *ids):
  """fold_in(... fold_in(key, ids[0]) ..., ids[-1]): the stream at that path of the table."""
  for i in ids:
    key = jax.random.fold_in(key, i)
  return key
