"""Where the image lies comes from nnU-Net's -1 marker, kept through nnU-Net's own augmentation."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_cmcl.pretraining.outside import MarkOutside, inside_image, keep_outside_marker
from nnunet_cmcl.pretraining.trainer import nnUNetTrainerCMCL

PATCH = (24, 24, 24)


def nnunet_transforms(trainer=nnUNetTrainer, regions=None):
    """nnU-Net's training transforms as its get_dataloaders asks for them (no deep supervision, as CMCL trains)."""
    return trainer.get_training_transforms(np.array(PATCH), (-0.5, 0.5), None, (0, 1, 2), False,
                                           use_mask_for_norm=[False, False], foreground_labels=[1, 2],
                                           regions=regions)


def force_intensity(transforms):
    """nnU-Net's noise, contrast and gamma transforms (and brightness) applied to every sample."""
    forced = [t for t in transforms.transforms if isinstance(t, RandomTransform) and
              any(k in type(t.transform).__name__ for k in ("Noise", "Contrast", "Gamma", "Brightness"))]
    assert len(forced) >= 4
    for t in forced:
        t.apply_probability = 1.0
    return forced


@pytest.mark.parametrize("regions", [None, [[1, 2], [2]]])
def test_the_cmcl_trainer_keeps_nnunets_outside_marker_and_no_label(regions):
    kinds = [type(t).__name__ for t in nnUNetTrainerCMCL.get_training_transforms(
        np.array(PATCH), (-0.5, 0.5), None, (0, 1, 2), False, use_mask_for_norm=[False, False],
        foreground_labels=[1, 2], regions=regions).transforms]
    assert "MarkOutside" in kinds and "RemoveLabelTransform" not in kinds
    assert "ConvertSegmentationToRegionsTransform" not in kinds  # it would read the marker as a label
    stock = [type(t).__name__ for t in nnunet_transforms(regions=regions).transforms]
    assert [k for k in kinds if k != "MarkOutside"] == \
        [k for k in stock if k not in ("RemoveLabelTransform", "ConvertSegmentationToRegionsTransform")]
    val = [type(t).__name__ for t in nnUNetTrainerCMCL.get_validation_transforms(None, regions=regions).transforms]
    assert "MarkOutside" in val and "RemoveLabelTransform" not in val


def test_inside_survives_nnunets_intensity_augmentation_where_data_nonzero_fails():
    torch.manual_seed(0)
    np.random.seed(0)  # batchgeneratorsv2 draws from numpy's and torch's generators
    transforms = nnunet_transforms()
    kept = [MarkOutside() if type(t).__name__ == "RemoveLabelTransform" else t for t in transforms.transforms]
    intensity = force_intensity(transforms)
    # a patch as nnU-Net's loader gives it: image on the left, padding (data 0 in every channel, segmentation -1)
    # on the right, labels 0..2 inside
    data = torch.randn(4, 2, *PATCH) + 2
    seg = torch.randint(0, 3, (4, 1, *PATCH), dtype=torch.int16)
    data[..., 12:] = 0
    seg[..., 12:] = -1
    truth = seg != -1
    # nnU-Net's own intensity transforms with the marker transform where nnU-Net has RemoveLabelTransform(-1, 0)
    order = [t for t in kept if t in intensity or isinstance(t, MarkOutside)]
    out = []
    for d, s in zip(data, seg):
        sample = {"image": d.clone(), "segmentation": s.clone()}
        for t in order:
            sample = t(**sample)
        out.append(sample)
    augmented = torch.stack([o["image"] for o in out])
    target = torch.stack([o["segmentation"] for o in out])
    assert torch.equal(inside_image(target), truth)
    assert set(torch.unique(target).tolist()) == {-1, 0}  # the marker only: no label reaches CMCL
    nonzero = (augmented != 0).any(dim=1, keepdim=True)
    assert (nonzero & ~truth).float().sum() > 0.5 * (~truth).sum()  # what data != 0 called image


def test_nnunets_full_training_transforms_keep_the_marker():
    torch.manual_seed(1)
    np.random.seed(1)  # the spatial transform's draws: the patch's inside share depends on them
    transforms = nnUNetTrainerCMCL.get_training_transforms(np.array(PATCH), (-0.5, 0.5), None, (0, 1, 2), False,
                                                           use_mask_for_norm=[False, False], foreground_labels=[1, 2])
    force_intensity(transforms)
    data = torch.randn(2, *PATCH) + 2
    seg = torch.zeros(1, *PATCH, dtype=torch.int16)
    data[..., 12:] = 0
    seg[..., 12:] = -1
    out = transforms(image=data, segmentation=seg)
    inside = inside_image(out["segmentation"][None])[0, 0]
    assert 0.3 < inside.float().mean() < 0.7  # about half the patch, wherever the spatial transform moved it
    assert (out["image"] != 0).any(dim=0)[~inside].float().mean() > 0.5


def test_changed_nnunet_transforms_are_refused():
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    with pytest.raises(RuntimeError, match="RemoveLabelTransform"):
        keep_outside_marker(ComposeTransforms([]))
