"""The fine-tuning schedule: nnU-Net's poly decay after an optional warm-up, stepped per iteration."""
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_cmcl.transfer.schedule import WarmupPolyLRScheduler, warmup_iterations


def test_warmup_is_a_fraction_of_the_schedule_and_stepped_per_iteration():
    assert warmup_iterations(1000, 250, 0.05, 50) == 50 * 250  # 5 % of nnU-Net's schedule
    assert warmup_iterations(3000, 250, 0.05, 50) == 50 * 250  # capped
    assert warmup_iterations(8, 12, 0.05, 50) == 5  # a short run warms up for a fraction of an epoch, then decays
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = WarmupPolyLRScheduler(optimizer, 0.01, num_epochs=3, iterations_per_epoch=10, warmup=4)
    lrs = []
    for i in range(30):
        scheduler.step_iteration(i)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    # after the ramp: nnU-Net's own poly schedule, as the vanilla baseline gets it
    vanilla = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    poly = PolyLRScheduler(vanilla, 0.01, 3)
    for epoch in range(3):
        poly.step(epoch)
        assert lrs[epoch * 10 + 4:epoch * 10 + 10] == pytest.approx([vanilla.param_groups[0]["lr"]] * 6)
    tiny = WarmupPolyLRScheduler(optimizer, 0.01, num_epochs=1, iterations_per_epoch=1, warmup=1)  # demo at 0.1
    tiny.step_iteration(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    scheduler.step(2)  # nnU-Net's call at the start of epoch 2: the lr of its first iteration
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lrs[20])
