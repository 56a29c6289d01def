"""Independent random streams derived from one run seed.

Every consumer of randomness (network initialisation, exploration noise, replay sampling, warm-up
actions, each component's surgery method) gets its own stream, derived from the run seed and the
stream's name with NumPy's ``SeedSequence``. Seeding them all with the run seed itself would make
streams coincide (the replay sampler and the noise generator drew the same numbers) and
``seed + offset`` schemes make run 0's second stream equal run 1's first one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_seed(run_seed: int, name: str) -> int:
    """A 63-bit seed for the stream ``name`` of the run seeded with ``run_seed``.

    Deterministic across processes and platforms (the name is hashed with BLAKE2, not Python's
    salted ``hash``); distinct names and distinct run seeds give statistically independent seeds.
    """
    if run_seed < 0:
        raise ValueError(f"run seed must be >= 0, got {run_seed}")
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    spawn_key = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    (word,) = np.random.SeedSequence(run_seed, spawn_key=spawn_key).generate_state(1, np.uint64)
    return int(word) >> 1
