from __future__ import annotations

import gc

from ehr_service.app import tune_garbage_collector


def test_gc_threshold_is_raised_and_can_be_left_alone() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector(0)
        assert gc.get_threshold() == before
        tune_garbage_collector(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
