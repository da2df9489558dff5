"""EarlyStopping: when training stops and what its progress bar counts to."""

from __future__ import annotations

from tqdm.auto import tqdm

from steercf.training import EarlyStopping


def test_the_progress_total_is_the_epoch_training_would_stop_at():
    bar = tqdm(total=100, disable=True)
    stopper: EarlyStopping[None] = EarlyStopping(patience=3, mode="max", counts_from=-1)
    scores = [0.1, 0.2, 0.2, 0.3, 0.25, 0.25, 0.25, 0.4]
    totals, stopped_after = [], None
    for epoch, score in enumerate(scores):
        stopper.update(score, epoch)
        stopper.bound_progress(bar, max_epochs=100)
        totals.append(bar.total)
        if stopper.should_stop:
            stopped_after = epoch
            break
    # best at epochs 0, 1, 3: the bar ends `patience` epochs after the latest best
    assert totals == [4, 5, 5, 7, 7, 7, 7]
    assert stopped_after == 6 and totals[-1] == stopped_after + 1
    # never past max_epochs
    stopper.bound_progress(bar, max_epochs=5)
    assert bar.total == 5
