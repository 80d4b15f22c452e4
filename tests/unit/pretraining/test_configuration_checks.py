"""Configurations CMCL cannot pretrain are refused before the network is built."""
import pytest

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.pretraining.trainer import check_not_cascaded


def test_cascade_stage_is_refused():
    # 3d_cascade_fullres appends 3d_lowres's one-hot segmentation to the input: channels of no modality
    with pytest.raises(CMCLInputError, match="3d_cascade_fullres is a cascade stage.*use 3d_fullres or 2d"):
        check_not_cascaded("3d_cascade_fullres", "3d_lowres")
    check_not_cascaded("3d_fullres", None)
