"""Seeds derived per purpose, so no two random streams of a run can share a seed.

    derive_seed(seed, purpose, i, j, ...) = the first 63 bits of
        numpy.random.SeedSequence([seed, PURPOSES[purpose], i, j, ...]).generate_state(...)

SeedSequence hashes its whole entropy list, so different purposes or indices give unrelated
seeds (unlike ``seed + 7919 * outer_step``-style sums, where the split seed of step 0 was the
order seed of replica 0, and the retraining seed that of a tuning epoch). A run is still a
function of its one seed.
"""

from __future__ import annotations

import numpy as np

#: Every random stream of a run, with a fixed code (append new purposes; never renumber).
PURPOSES: dict[str, int] = {
    "split": 1,           # validation split of an outer step
    "init": 2,            # network initialisation of a tuning replica
    "order": 3,           # batch order of a replica in an outer step
    "retrain-init": 4,    # network initialisation of the final retraining
    "retrain-order": 5,   # batch order of the final retraining
}


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """A seed in [0, 2^63) for ``purpose`` (a key of :data:`PURPOSES`) at ``index``.

    Raises ValueError for an unknown purpose or a negative seed or index.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {sorted(PURPOSES)}")
    entropy = [int(seed), PURPOSES[purpose], *(int(i) for i in index)]
    if min(entropy) < 0:
        raise ValueError(f"seeds and indices must be non-negative, got {entropy}")
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))
