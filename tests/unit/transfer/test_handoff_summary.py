"""`nnunet-cmcl verify`'s summary: a decoder that pretraining did not train is called untrained."""
import torch
from torch import nn

from nnunet_cmcl.checkpoints import make_record
from nnunet_cmcl.pretraining.config import CMCLConfig
from nnunet_cmcl.transfer.handoff import check_transfer


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv3d(2, 4, 3)
        self.decoder = nn.Conv3d(4, 2, 1)


def checkpoint_of(network, weight_reconstruction):
    config = CMCLConfig(weight_reconstruction=weight_reconstruction).to_dict()
    return {"network_weights": network.state_dict(),
            "cmcl": make_record(config=config, modalities={"channel_names": {"0": "T1", "1": "T2"}})}


def test_decoder_without_reconstruction_is_reported_untrained():
    network, channels = TinyUNet(), {"0": "T1", "1": "T2"}
    summary, problems = check_transfer(checkpoint_of(network, 0.0), network, channels)
    assert not problems and summary[0] == "encoder: 2/2 tensors transfer"
    assert summary[1].startswith("decoder: 2/2 tensors fit but are untrained")
    summary, _ = check_transfer(checkpoint_of(network, 1.0), network, channels)  # nnUNetTrainerCMCL_DAE's
    assert summary[1] == "decoder: 2/2 tensors transfer"
    summary, _ = check_transfer({"network_weights": network.state_dict()}, network, channels)  # plain nnU-Net
    assert summary[1] == "decoder: 2/2 tensors transfer"
