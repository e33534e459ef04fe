"""inverse_sqrt_nowarmup: peak rate from the first update, then inverse-sqrt decay."""

import math

import pytest
import torch

from conftest import parse_args
from fairseq import optim
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim import lr_scheduler


def build_scheduler(*flags):
    args = parse_args("transformer_prenorm_nowarmup_tiny", "--optimizer", "adam", *flags)
    cfg = convert_namespace_to_omegaconf(args)
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    return lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer), optimizer


def test_starts_at_peak_and_decays():
    sched, optimizer = build_scheduler(
        "--lr", "7e-4", "--lr-scheduler", "inverse_sqrt_nowarmup", "--decay-timescale", "100"
    )
    assert optimizer.get_lr() == pytest.approx(7e-4)  # before the first update
    assert sched.step_update(0) == pytest.approx(7e-4)
    rates = [sched.step_update(t) for t in range(0, 2000, 50)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert sched.step_update(100) == pytest.approx(7e-4 / math.sqrt(2))
    assert optimizer.get_lr() == pytest.approx(7e-4 / math.sqrt(2))


def test_tail_matches_fairseq_inverse_sqrt_with_warmup_equal_to_timescale():
    ours, _ = build_scheduler("--lr", "5e-4", "--lr-scheduler", "inverse_sqrt_nowarmup", "--decay-timescale", "400")
    ref, _ = build_scheduler("--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400")
    assert ours.step_update(1) > 10 * ref.step_update(1)  # no warm-up
    for t in (40_000, 400_000):
        assert ours.step_update(t) / ref.step_update(t) == pytest.approx(math.sqrt(t / (t + 400)))


def test_fairseq_inverse_sqrt_cannot_start_without_warmup():
    with pytest.raises(ZeroDivisionError):
        build_scheduler("--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "0")


@pytest.mark.parametrize(
    "flags,message",
    [
        (("--lr", "0"), r"--lr must be a finite number > 0; got 0.0"),
        (("--lr", "5e-4,1e-4"), r"--lr takes one value with --lr-scheduler inverse_sqrt_nowarmup"),
        (("--lr", "5e-4", "--decay-timescale", "0"), r"--decay-timescale must be a finite number > 0; got 0"),
        (("--lr", "5e-4", "--decay-timescale", "nan"), r"--decay-timescale must be a finite number > 0; got nan"),
    ],
)
def test_refuses(flags, message):
    with pytest.raises(ValueError, match=message):
        build_scheduler("--lr-scheduler", "inverse_sqrt_nowarmup", *flags)


def test_resumes_from_its_state():
    sched, optimizer = build_scheduler("--lr", "1e-3", "--lr-scheduler", "inverse_sqrt_nowarmup")
    sched.step(1, val_loss=3.0)
    again, optimizer2 = build_scheduler("--lr", "1e-3", "--lr-scheduler", "inverse_sqrt_nowarmup")
    again.load_state_dict(sched.state_dict())
    assert again.best == 3.0
    assert again.step_update(5000) == sched.step_update(5000)
