"""A seeded, resumable stream of ``(object index, item seed)`` keys for step-based training.

Global stream position ``g`` (0, 1, 2, ...) maps to an object through pass ``g // n``'s permutation
(``default_rng([seed, pass])``) and to an item seed ``SeedSequence([seed, g])``. Rank ``r`` of ``W`` takes
positions ``g = q·W + r`` for its local positions ``q``. Because the stream is a pure function of the seed,
resuming at step ``s`` only needs the start position ``q0 = s · accumulate · batch_size`` — no sampler
state has to be saved, and the data order is identical to an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def item_seed(seed: int, position: int) -> int:
    """The 32-bit seed of the item at a global stream position."""
    return int(np.random.SeedSequence([int(seed), int(position)]).generate_state(1)[0])


class SeededStreamSampler(Sampler[tuple[int, int]]):
    """Yields ``(object index, item seed)`` for local positions ``start .. length-1`` of this rank.

    ``len()`` is ``length`` (the full virtual epoch) even when ``start > 0``: the training loop then ends at
    the same step as an uninterrupted run, and progress bars keep their total.
    """

    def __init__(
        self,
        num_objects: int,
        seed: int = 0,
        length: int = 1_000_000,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if num_objects <= 0:
            raise ValueError("SeededStreamSampler needs at least one object")
        self.num_objects = int(num_objects)
        self.seed = int(seed)
        self.length = int(length)
        self.start = int(start)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self._perm_pass = -1
        self._perm = np.arange(self.num_objects)

    def _object(self, g: int) -> int:
        p, k = divmod(g, self.num_objects)
        if self.shuffle and p != self._perm_pass:
            self._perm = np.random.default_rng([self.seed, p]).permutation(self.num_objects)
            self._perm_pass = p
        return int(self._perm[k])

    def key(self, q: int) -> tuple[int, int]:
        """The key at local position ``q``."""
        g = q * self.world_size + self.rank
        return self._object(g), item_seed(self.seed, g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for q in range(self.start, self.length):
            yield self.key(q)

    def __len__(self) -> int:
        return self.length
