"""Indexes kept in memory under a byte bound: an LRU over :attr:`ImageIndex.nbytes`.

The web app's sessions (and a server's requests) hold a key, not an index: one
:class:`IndexStore` shared by all of them keeps the indexes, so the same image opened twice
is indexed once, and the memory they take is bounded however many sessions there are.

Size. An index grows after it is stored: its box-decode cache fills as it is queried (see
:class:`~grounded_sam.grounding.index.BoxDecodeCache`). The store therefore measures every
entry again on each :meth:`~IndexStore.put` and :meth:`~IndexStore.get` and evicts least
recently used entries until the total is within the bound. Two rules decide the edges:

- :meth:`~IndexStore.put` refuses an index that is larger than the bound on its own
  (:class:`ValueError`): storing it would evict everything else and still break the bound.
- The entry just put or got is never evicted by that call, so one index that has grown past
  the bound after it was stored is kept, alone, until another entry is used.

Thread safety: every method takes the store's lock, so one store may be shared by any
number of threads. :meth:`~IndexStore.get_or_build` builds outside that lock, once per key:
a second caller of the same key waits for the first build instead of building again, and
callers of other keys are not held up. The indexes themselves are safe to share (see
:mod:`grounded_sam.grounding.index`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grounded_sam.grounding.index import ImageIndex

__all__ = ["DEFAULT_MAX_BYTES", "IndexStore"]

logger = logging.getLogger(__name__)

#: Default bound of a store: 2 GiB (a 4096 px image's index with two refine levels is ~0.2 GiB).
DEFAULT_MAX_BYTES = 2 * 1024**3


class IndexStore:
    """A thread-safe LRU of :class:`ImageIndex` values, bounded by their total ``nbytes``.

    Args:
        max_bytes: Most bytes the stored indexes may take together (see the module notes
            for an index that grows past it).

    Raises:
        ValueError: ``max_bytes`` is not a positive integer.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}.")
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, ImageIndex] = OrderedDict()  # oldest first
        self._building: dict[Hashable, _Gate] = {}  # keys being built, with their waiters

    @property
    def max_bytes(self) -> int:
        """The bound, in bytes."""
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """Bytes the stored indexes take now (measured again)."""
        with self._lock:
            return sum(index.nbytes for index in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is stored (does not count as a use)."""
        with self._lock:
            return key in self._entries

    def keys(self) -> list[Hashable]:
        """The stored keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(self, key: Hashable, default: ImageIndex | None = None) -> ImageIndex | None:
        """The index stored under ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            index = self._entries.get(key)
            if index is None:
                return default
            self._entries.move_to_end(key)
            self._evict()
            return index

    def put(self, key: Hashable, index: ImageIndex) -> list[Hashable]:
        """Store ``index`` under ``key`` (replacing what was there) as the most recent entry.

        Returns:
            The keys evicted to stay within the bound, least recently used first.

        Raises:
            ValueError: The index alone is larger than the bound (nothing is changed).
        """
        size = index.nbytes
        if size > self._max_bytes:
            raise ValueError(
                f"This image's index takes {_mib(size)}, more than the index store's bound of "
                f"{_mib(self._max_bytes)}: raise the bound or use a smaller image."
            )
        with self._lock:
            self._entries[key] = index
            self._entries.move_to_end(key)
            return self._evict()

    def pop(self, key: Hashable, default: ImageIndex | None = None) -> ImageIndex | None:
        """Remove and return the index under ``key``, or ``default`` when there is none."""
        with self._lock:
            return self._entries.pop(key, default)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._entries.clear()

    def get_or_build(
        self, key: Hashable, build: Callable[[], ImageIndex]
    ) -> tuple[ImageIndex, bool]:
        """The index under ``key``, building and storing it when missing (once per key).

        Args:
            key: The caller's key (the app uses the digest of the image's pixels).
            build: Makes the index; called without the store's lock held, and by one caller
                at a time per key.

        Returns:
            ``(index, built)``: ``built`` is True when this call ran ``build``.

        Raises:
            ValueError: The built index is larger than the bound (see :meth:`put`).
        """
        index = self.get(key)
        if index is not None:
            return index, False
        with self._lock:
            gate = self._building.setdefault(key, _Gate())
            gate.waiting += 1
        try:
            with gate.lock:
                index = self.get(key)  # built by the caller we waited for
                if index is not None:
                    return index, False
                index = build()
                self.put(key, index)
                return index, True
        finally:
            with self._lock:
                gate.waiting -= 1
                if not gate.waiting:
                    del self._building[key]

    def _evict(self) -> list[Hashable]:
        """Drop least recently used entries (never the newest) until within the bound."""
        evicted: list[Hashable] = []
        total = sum(index.nbytes for index in self._entries.values())
        while total > self._max_bytes and len(self._entries) > 1:
            key, index = self._entries.popitem(last=False)
            total -= index.nbytes
            evicted.append(key)
        if evicted:
            logger.info(
                "Index store: evicted %d index(es) to stay within %s (%s kept in %d)",
                len(evicted),
                _mib(self._max_bytes),
                _mib(total),
                len(self._entries),
            )
        return evicted


class _Gate:
    """One key's build lock and how many callers hold or wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = 0


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"
