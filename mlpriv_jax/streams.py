"""Every random stream of the library, named once (STYLE: keys are typed and addressed by index).

A run has one root, `jax.random.key(seed)`. The world's streams (the game's split into members and non-members, its
models) come from the root itself; the three parties draw from branches of their own, one per game (0: a program's
victim; the arena's DP-SGD victims are games 1, 2, ...), so that no draw of one party is ever a draw of another:

  DEFENDER     what the defender makes once (MAD's proxy, MemGuard's classifier) and each client account's key
  ATTACKER     the attacker's choices: its queries, surrogates and calibrations, the candidates it scores
  EVALUATION   the evaluator's own draws (the bootstrap of the membership intervals)

Each stream is `fold_in(parent, ID)` of the parent its comment names; a model, an example, a round or a query is
then addressed by its index. An account's key is a leaf: the account addresses its calls by its query count
(`fold_in(key, queries_used)`), so no named stream is below it. Nothing outside this table folds in a constant.
"""

import jax

# --- The root's own streams: the world ---------------------------------------------------------------------------
TRAIN, KEEP = 0, 1                 # the models trained (train.py, the membership game; table t's victim: TRAIN, t)
TARGET_HALF = 2                    # the membership target's half of the universe
INDEPENDENT = 6                    # the owner's negatives: models trained on disjoint data (model j below)

# --- The parties' branches: derive(root, PARTY, game) -------------------------------------------------------------
DEFENDER, ATTACKER, EVALUATION = 3, 4, 5

# Below the defender's branch: what `defences.assemble` makes from it, the accounts of its clients, and the owner's
# proofs of theft (`ownership`)
PROXY, GUARD, ACCOUNTS, OWNERSHIP = 1, 2, 3, 4
# derive(defender, ACCOUNTS, client): the attacker's extraction account, its membership account (score attacks;
# mia.py's query attacks too), the arena's second membership account (the query attacks, run in lockstep apart),
# and the evaluator's (utility); a served key's account is addressed by its name's CRC-32 instead
EXTRACTION_CLIENT, MEMBERSHIP_CLIENT, MEMBERSHIP_QUERY_CLIENT, EVALUATOR_CLIENT = 0, 1, 2, 3

# Below the attacker's branch: its two attacks' keys
EXTRACTION, MEMBERSHIP = 0, 1
# Below the membership attacker's key
QUERY_CANDIDATES, SCORE_ATTACKS, QUERY_ATTACKS = 0, 1, 2   # the query attacks' candidates (a permutation), ...
AWARE_DEFENCE, AWARE_ANSWERS = 3, 4   # the defence-aware attacker's copy of the defence, its shadows' accounts

# Below the evaluation branch
BOOTSTRAP = 0                      # the membership intervals' resampling

# --- Inside attacks and defences (below the key they are given) ------------------------------------------------
KNOCKOFF_QUERIES, KNOCKOFF_TRAIN = 0, 1        # KnockoffNets: the transfer set, the surrogate's training
# The adaptive extraction attacks, below the same key (top1 and smoothing share KnockoffNets' two streams):
SMOOTHING_VIEWS = 2                            # Smoothing's augmentations (pass j below it)
RECOVERY_SUBSETS, RECOVERY_SHADOWS, RECOVERY_KIT, RECOVERY_TABLE, RECOVERY_NET = 3, 4, 5, 6, 7   # D-DAE
SHADOW_CLASSES, SHADOW_HALF = 0, 1             # below RECOVERY_SUBSETS: shadow k's classes and member half
ADAPTIVE_INIT, ADAPTIVE_STEPS = 1, 2           # KnockoffNets-adaptive's online surrogate
CLOUDLEAK_ORDER = 0                            # CloudLeak's pool order (round r trains with r + 1)
DATAFREE_STUDENT, DATAFREE_GENERATOR, DATAFREE_ITERATIONS = 0, 1, 2   # DFME, DisGUIDE: inits; iteration i below
LABEL_TARGET, LABEL_CALIBRATION = 0, 1         # a label-only attack on the target, on the attacker's shadow
HSJ_INIT, HSJ_GRADIENT = 0, 1                  # HopSkipJump's start and its gradient estimates
MEMGUARD_PROJECTION, MEMGUARD_CODES = 0, 1     # MemGuard's tie-breaking projection and per-row codes
MLP_INIT, MLP_BATCHES = 0, 1                   # the attack MLPs' initialisation and batch order
DI_WALK, DI_REGRESSOR, DI_RESAMPLE = 0, 1, 2    # Dataset Inference: the walks' directions, g, the revealed points
DI_FIT_PRIVATE, DI_FIT_PUBLIC, DI_TEST_PRIVATE, DI_TEST_PUBLIC = 0, 1, 2, 3   # below DI_WALK: the four walked sets
IPGUARD_SEEDS, IPGUARD_TARGETS = 3, 4           # IPGuard: the fingerprint's seed points and target classes
DAWN_MASTER = 5                                # DAWN: the watermark's master secret

# --- The training engine, below model k's key fold_in(key, k) ---------------------------------------------------
INIT, ORDER, STEP, POISSON = 0, 1, 2, 3        # initialisation, epoch order, step keys, DP-SGD's Poisson draws


def derive(key, *ids):
  """fold_in(... fold_in(key, ids[0]) ..., ids[-1]): the stream at that path of the table."""
  for i in ids:
    key = jax.random.fold_in(key, i)
  return key


def branch(root, party: int, game: int = 0):
  """A party's branch of the root for one game (DEFENDER, ATTACKER or EVALUATION)."""
  return derive(root, party, game)


def account(root, client: int, game: int = 0):
  """The key of one client's account at the defender of one game (a leaf)."""
  return derive(root, DEFENDER, game, ACCOUNTS, client)
