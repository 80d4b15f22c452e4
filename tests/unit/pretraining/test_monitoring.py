"""The grad scaler's skipped steps are counted on the device and read once an epoch (torch's CPU grad scaler)."""
import torch

from nnunet_cmcl.host_syncs import HostSyncCounter
from nnunet_cmcl.pretraining.monitoring import ScalerSkipCounter


def scaled_step(model, optimizer, scaler, step, overflow=False):
    """One step through the scaler; ``overflow`` gives an inf gradient with a finite loss, as fp16 overflow does."""
    optimizer.zero_grad()
    loss = model(torch.ones(2, 4)).pow(2).mean()
    hook = model.weight.register_hook(lambda g: torch.full_like(g, float("inf"))) if overflow else None
    scaler.scale(loss).backward()
    if hook is not None:
        hook.remove()
    scaler.unscale_(optimizer)
    with HostSyncCounter() as counter:
        step()
    return counter.total


def test_skipped_steps_are_counted_once_an_epoch_without_a_host_sync():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    skips = ScalerSkipCounter()

    def counted():
        skips.step(scaler, optimizer)

    def plain():
        scaler.step(optimizer)
        scaler.update()

    weight = model.weight.detach().clone()
    # counting adds no host sync to what the scaler's own step and update do
    assert scaled_step(model, optimizer, scaler, counted, overflow=True) == \
        scaled_step(model, optimizer, scaler, plain, overflow=True)
    assert torch.equal(model.weight, weight) and scaler.get_scale() == 2.0 ** 14  # skipped twice, scale halved twice
    scaled_step(model, optimizer, scaler, counted)  # a good step: updates, the scale stays
    assert not torch.equal(model.weight, weight) and scaler.get_scale() == 2.0 ** 14
    scaled_step(model, optimizer, scaler, counted, overflow=True)
    assert skips.epoch.device.type == "cpu" and skips.end_epoch() == 2 and skips.total == 2  # the plain step not
    scaled_step(model, optimizer, scaler, counted)
    assert skips.end_epoch() == 0 and skips.total == 2
