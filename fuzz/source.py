"""What a target varies besides its bytes: options and split points.

Both are drawn from a CRC-32 of the input, not from bytes of it, so a seed
file holds nothing but the protocol bytes, and any mutation of an input also
moves its split points (the fuzzer explores both at once).
"""

from __future__ import annotations

import itertools
import random
import zlib


class Source:
    """Deterministic choices for one input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._random = random.Random(zlib.crc32(data))

    def flag(self) -> bool:
        return self._random.random() < 0.5

    def choice(self, n: int) -> int:
        return self._random.randrange(n)

    def pieces(self, data: bytes | None = None) -> list[bytes]:
        """`data` (the whole input by default) cut at 0 to 8 random points."""
        data = self.data if data is None else data
        if len(data) < 2:
            return [data]
        cuts = sorted({self._random.randrange(1, len(data)) for _ in range(self.choice(9))})
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]
