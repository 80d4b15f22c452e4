"""HostSyncCounter sees the operations that make the host wait for a CUDA device, on the CPU too."""
import pytest
import torch

from nnunet_cmcl.host_syncs import HostSyncCounter


def test_counts_host_reads_and_data_dependent_shapes_but_not_arithmetic():
    x = torch.randn(4, 3)
    mask = x[:, 0] > 0
    with HostSyncCounter() as counter:
        y = (x * 2).sum(dim=1).softmax(dim=0)
        x[torch.tensor([0, 2])]  # integer indexing: the output shape is known without reading values
    assert counter.total == 0 and counter.from_python_data == 1
    with HostSyncCounter() as counter:
        y.max().item()
        x[mask]
        bool(y.sum() > 0)
    assert dict(counter.syncs) == {"aten._local_scalar_dense.default": 2, "aten.index.Tensor": 1}


def test_counts_copies_from_a_device_to_the_host():
    # a meta tensor stands in for a CUDA one: the copy is seen before it runs (and fails, having no data)
    with HostSyncCounter() as counter:
        torch.ones(2).to(torch.float64)  # a copy on the host is no sync
        with pytest.raises(NotImplementedError):
            torch.empty(2, device="meta").cpu()
    assert dict(counter.syncs) == {"aten._to_copy.default": 1}
