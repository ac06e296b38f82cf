"""A worker freezes the heap it loaded (no full-collection pauses over a version's objects) and unfreezes it again
when a new version replaces it (the old one is collected, not kept)."""

from __future__ import annotations

import gc
import weakref

from serving.runtime import freeze_heap


class Node:
    me: Node


def test_frozen_objects_skip_collections_until_the_next_freeze_releases_them():
    loaded = Node()
    loaded.me = loaded  # a reference cycle: only the cyclic collector frees it
    alive = weakref.ref(loaded)
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        del loaded
        gc.collect()
        assert alive() is not None, "a frozen object is not even looked at by a full collection"
        freeze_heap()  # a new version was loaded: the replaced one must go
        assert alive() is None, "objects frozen earlier are unfrozen and collected before freezing again"
    finally:
        gc.unfreeze()
