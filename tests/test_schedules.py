"""The trainer's own schedules: the reference code's anneal-on-regression rule and the cosine."""

from __future__ import annotations

import math
import random

import pytest
import torch

from torchtcn.schedules import AnnealOnRegression


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def _reference_lrs(values, lr, factor, window, after):
    """music_test.py's loop, written out: ``if ep > after and v > max(vloss_list[-window:])``."""
    seen, out = [], []
    for ep, v in enumerate(values, start=1):
        if ep > after and seen and v > max(seen[-window:]):
            lr *= factor
        seen.append(v)
        out.append(lr)
    return out


@pytest.mark.parametrize("window,after", [(3, 10), (5, 5), (1, 0), (3, 0)])
def test_matches_the_reference_loop_on_random_curves(window, after):
    rng = random.Random(window * 100 + after)
    for _ in range(20):
        values = [rng.uniform(0, 1) + 0.5 / (i + 1) for i in range(40)]
        opt = _optimizer()
        sched = AnnealOnRegression(opt, factor=0.5, window=window, after=after)
        lrs = []
        for v in values:
            sched.step(v)
            lrs.append(opt.param_groups[0]["lr"])
        assert lrs == pytest.approx(_reference_lrs(values, 1.0, 0.5, window, after))


def test_on_tie_is_the_word_scripts_greater_or_equal():
    # word_cnn_test.py: ``if epoch > 5 and val_loss >= max(all_vloss[-5:])``; a run whose
    # weights stopped moving repeats its validation loss, and must go on annealing
    values = [5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    for on_tie, annealed_at in ((False, []), (True, [8, 9, 10])):
        sched = AnnealOnRegression(_optimizer(), factor=0.5, window=5, after=5, on_tie=on_tie)
        assert [e for e, v in enumerate(values, start=1) if sched.step(v)] == annealed_at
    from torchtcn.tasks import get_task

    assert get_task("word_ptb").resolve("tcn").train.lr_on_tie is True
    assert get_task("lambada").resolve("tcn").train.lr_on_tie is True
    assert get_task("char_ptb").resolve("tcn").train.lr_on_tie is False  # the char script: >
    assert get_task("jsb").resolve("tcn").train.lr_on_tie is False  # the music script: >
    with pytest.raises(TypeError, match="on_tie must be a bool"):
        AnnealOnRegression(_optimizer(), on_tie="yes")


def test_max_mode_anneals_when_accuracy_drops():
    opt = _optimizer()
    sched = AnnealOnRegression(opt, factor=0.1, window=2, after=0, mode="max")
    assert [sched.step(v) for v in [50.0, 60.0, 70.0, 55.0, 80.0]] == [False, False, False, True, False]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_never_anneals_during_warm_up_or_while_improving():
    opt = _optimizer()
    sched = AnnealOnRegression(opt, factor=0.1, window=3, after=10)
    for v in [1.0, 9.0, 9.5, 9.9, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]:  # worsening, but epochs 1-10
        assert not sched.step(v)
    for v in [14.0, 13.0, 12.0]:  # improving after the warm-up
        assert not sched.step(v)
    assert opt.param_groups[0]["lr"] == 1.0


def test_state_dict_round_trip_keeps_the_decisions():
    a = AnnealOnRegression(_optimizer(), window=3, after=0)
    for v in [3.0, 2.0, 1.0]:
        a.step(v)
    b = AnnealOnRegression(_optimizer(), window=3, after=0)
    b.load_state_dict(a.state_dict())
    assert b.step(3.5) and a.step(3.5)
    fresh = AnnealOnRegression(_optimizer(), window=3, after=0)
    assert not fresh.step(3.5)  # without the history there is nothing to compare with


@pytest.mark.parametrize("kwargs,match", [
    ({"factor": 1.0}, "factor"), ({"factor": 0.0}, "factor"), ({"window": 0}, "window"),
    ({"window": True}, "window"), ({"after": -1}, "after"), ({"mode": "up"}, "mode")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnnealOnRegression(_optimizer(), **kwargs)


def test_bad_state_is_rejected():
    with pytest.raises(ValueError, match="history"):
        AnnealOnRegression(_optimizer()).load_state_dict({"history": "abc"})


def test_cosine_is_a_function_of_the_epoch_and_survives_a_longer_plan():
    from torchtcn.schedules import CosineOverEpochs

    opt = _optimizer(lr=0.5)  # the optimizer's lr is overwritten: the cosine starts from lr
    sched = CosineOverEpochs(opt, lr=2.0, epochs=4)
    assert opt.param_groups[0]["lr"] == 2.0
    lrs = [sched.step() for _ in range(5)]
    assert lrs == pytest.approx([2.0 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (1, 2, 3, 4, 4)])
    # resumed after epoch 2 with 8 epochs planned: the lr is the 8-epoch cosine's, not the 4's
    longer = CosineOverEpochs(_optimizer(), lr=2.0, epochs=8)
    longer.load_state_dict({"epoch": 2})
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * (1 + math.cos(math.pi * 2 / 8)) / 2)
    with pytest.raises(ValueError, match="'epoch'"):
        longer.load_state_dict({"epoch": -1})
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        CosineOverEpochs(_optimizer(), lr=1.0, epochs=0)


def test_a_trainer_setting_added_since_a_run_compares_as_its_default():
    # old checkpoints and result files lack lr_on_tie: they ran with the default (">"), so a
    # resume or the report must not see a changed setting where there is none
    from torchtcn.tasks import get_task
    from torchtcn.train import run_differences

    for task, expected in (("jsb", []), ("word_ptb", ["train.lr_on_tie: False -> True"])):
        current = get_task(task).resolve("tcn").to_dict()
        old = {**current, "train": {k: v for k, v in current["train"].items() if k != "lr_on_tie"}}
        assert run_differences(old, current) == expected
