"""Checkpoint state is saved with every tensor on the CPU, so it loads on a machine without a GPU."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nnunet_cmcl.checkpoints import on_cpu


def test_optimizer_state_of_cuda_tensors_is_saved_on_the_cpu():
    # fake CUDA tensors: the test needs no GPU; an AdamW state dict's nesting, with plain values kept as they are
    with FakeTensorMode():
        state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, device="cuda"),
                               "exp_avg_sq": torch.zeros(4, device="cuda")}},
                 "param_groups": [{"lr": 3e-4, "params": [0], "betas": (0.9, 0.999)}]}
        moved = on_cpu(state)
    tensors = list(moved["state"][0].values())
    assert state["state"][0]["exp_avg"].device.type == "cuda"
    assert all(t.device.type == "cpu" for t in tensors)
    assert moved["param_groups"] == state["param_groups"]
    assert on_cpu({"scale": 65536.0, "_growth_tracker": 3}) == {"scale": 65536.0, "_growth_tracker": 3}
