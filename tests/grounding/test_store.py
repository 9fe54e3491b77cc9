"""IndexStore: an LRU bounded by the indexes' bytes, shared by threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from grounded_sam.grounding.store import DEFAULT_MAX_BYTES, IndexStore


class Sized:
    """Stands in for an ImageIndex: the store reads ``nbytes`` only (it may grow)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"Sized({self.nbytes})"


# Each case: bound, then steps (op, key, size) with op put / get / grow; then the keys left
# (least recently used first) and the keys each put evicted.
CASES = {
    "within the bound nothing is evicted": (
        100, [("put", "a", 40), ("put", "b", 60)], ["a", "b"], {"a": [], "b": []},
    ),
    "the least recently put goes first": (
        100, [("put", "a", 40), ("put", "b", 40), ("put", "c", 40)], ["b", "c"], {"c": ["a"]},
    ),
    "a get makes an entry the most recent": (
        100,
        [("put", "a", 40), ("put", "b", 40), ("get", "a", 0), ("put", "c", 40)],
        ["a", "c"],
        {"c": ["b"]},
    ),
    "several go to make room for a large one": (
        100,
        [("put", "a", 30), ("put", "b", 30), ("put", "c", 30), ("put", "d", 80)],
        ["d"],
        {"d": ["a", "b", "c"]},
    ),
    "replacing a key re-measures it": (
        100, [("put", "a", 50), ("put", "b", 40), ("put", "a", 70)], ["a"], {"a": ["b"]},
    ),
    "an index exactly the bound fits": (100, [("put", "a", 100)], ["a"], {"a": []}),
    "growth is seen on the next get": (
        100,
        [("put", "a", 40), ("put", "b", 40), ("grow", "b", 30), ("get", "b", 0)],
        ["b"],
        {},
    ),
    "one grown past the bound is kept alone": (
        100, [("put", "a", 40), ("put", "b", 40), ("grow", "b", 90), ("get", "b", 0)], ["b"], {},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_lru_by_bytes(case: str) -> None:
    bound, steps, left, evictions = CASES[case]
    store = IndexStore(bound)
    items: dict[str, Sized] = {}
    seen: dict[str, list] = {}
    for op, key, size in steps:
        if op == "put":
            items[key] = Sized(size)
            seen[key] = store.put(key, items[key])
        elif op == "get":
            assert store.get(key) is items[key]
        else:
            items[key].nbytes += size
    assert store.keys() == left and len(store) == len(left)
    assert store.nbytes == sum(items[k].nbytes for k in left)
    for key, evicted in evictions.items():
        assert seen[key] == evicted
    for key in items:
        assert (key in store) == (key in left)


@pytest.mark.parametrize(
    ("bound", "message"),
    [(0, "positive integer"), (-5, "positive integer"), (1.5, "positive integer"),
     (True, "positive integer")],
)  # fmt: skip
def test_bad_bounds(bound, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexStore(bound)


def test_an_index_larger_than_the_bound_is_refused_and_changes_nothing() -> None:
    store = IndexStore(100)
    store.put("a", Sized(50))
    with pytest.raises(ValueError, match=r"takes 0.0 MiB, more than the index store's bound"):
        store.put("big", Sized(101))
    assert store.keys() == ["a"]
    with pytest.raises(ValueError, match="bound"):
        store.get_or_build("big", lambda: Sized(101))
    assert store.keys() == ["a"]


def test_get_pop_contains_defaults() -> None:
    store = IndexStore()
    assert store.max_bytes == DEFAULT_MAX_BYTES
    a = Sized(1)
    assert store.get("x") is None and store.get("x", a) is a and store.pop("x") is None
    store.put("x", a)
    assert "x" in store and store.pop("x") is a and "x" not in store and len(store) == 0
    store.put("y", a)
    store.clear()
    assert len(store) == 0 and store.nbytes == 0


def test_get_or_build_builds_once_per_key_across_threads() -> None:
    store = IndexStore(1000)
    calls: list[str] = []
    started = threading.Event()

    def build(key: str):
        def make() -> Sized:
            calls.append(key)
            started.set()
            time.sleep(0.05)  # the other callers arrive while this one builds
            return Sized(10)

        return make

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: store.get_or_build(k, build(k)), ["a"] * 6 + ["b"] * 2))
    assert sorted(calls) == ["a", "b"]  # one build per key
    a_index = [i for (i, _), k in zip(got, ["a"] * 6 + ["b"] * 2, strict=True) if k == "a"]
    assert all(i is a_index[0] for i in a_index)
    assert sum(built for _, built in got) == 2
    assert store._building == {}  # no gate left behind


def test_a_failed_build_stores_nothing_and_the_next_caller_builds() -> None:
    store = IndexStore(1000)

    def fail() -> Sized:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        store.get_or_build("a", fail)
    assert "a" not in store and store._building == {}
    index, built = store.get_or_build("a", lambda: Sized(5))
    assert built and store.get("a") is index


def test_threads_putting_and_getting_keep_the_bound() -> None:
    store = IndexStore(100)

    def work(i: int) -> None:
        for j in range(50):
            store.put((i, j % 5), Sized(7))
            store.get((i, (j + 1) % 5))
            assert store.nbytes <= 100

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert store.nbytes <= 100 and len(store) == 100 // 7


def test_a_real_index_is_kept_by_its_bytes(make_engine) -> None:
    from .oracle import make_scene

    scene = make_scene()
    gs = make_engine(scene, prefetch_boxes=False)
    index = gs.index(scene.image)
    store = IndexStore(index.nbytes + 1)
    store.put("img", index)
    assert store.nbytes == index.nbytes
    gs.query(index, "red square")  # the box-decode cache grows the index past the bound
    other = gs.index(scene.image)
    assert store.put("other", other) == ["img"] and store.keys() == ["other"]
