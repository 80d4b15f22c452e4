"""Where the image lies in a patch, from the marker nnU-Net writes itself: -1 in the segmentation.

nnU-Net's preprocessing (``crop_to_nonzero``) writes -1 into the segmentation outside the nonzero region, also
for cases without labels (``nnunet-cmcl prepare``'s get 0 inside and -1 outside), and its data loader pads the
segmentation with -1. The intensities cannot tell: nnU-Net's noise, contrast and gamma transforms also change the
zero padding, so ``data != 0`` holds there in about half the samples of data normalised without
``use_mask_for_norm``. nnU-Net's transforms end by turning -1 into 0 (``RemoveLabelTransform(-1, 0)``);
``keep_outside_marker`` keeps it instead, and drops the labels.
"""
from __future__ import annotations

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, SegOnlyTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

OUTSIDE = -1  # nnU-Net's marker of the outside of the image in the segmentation


class MarkOutside(SegOnlyTransform):
    """segmentation (S, *P) -> (1, *P) int16: -1 outside the image, 0 inside. No label survives it, so CMCL
    cannot read one."""

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return torch.where(segmentation[:1] == OUTSIDE, OUTSIDE, 0).to(torch.int16)


def keep_outside_marker(transforms: BasicTransform) -> ComposeTransforms:
    """nnU-Net's training or validation transforms with ``RemoveLabelTransform(-1, 0)`` replaced by ``MarkOutside``
    and the conversion to regions dropped (it would read the marker as a label); everything else as nnU-Net made it.
    """
    if not isinstance(transforms, ComposeTransforms) or not any(_removes_outside(t) for t in transforms.transforms):
        raise RuntimeError("nnU-Net's transforms no longer end with RemoveLabelTransform(-1, 0), which CMCL replaces "
                           "to keep the outside of the image: install the nnU-Net version in pyproject.toml")
    kept = [MarkOutside() if _removes_outside(t) else t for t in transforms.transforms
            if not isinstance(t, ConvertSegmentationToRegionsTransform)]
    return ComposeTransforms(kept)


def _removes_outside(transform: BasicTransform) -> bool:
    return isinstance(transform, RemoveLabelTransform) and transform.label_value == OUTSIDE


def inside_image(target: torch.Tensor) -> torch.Tensor:
    """The batch's segmentation after ``keep_outside_marker`` (B, S, *P) -> (B, 1, *P) bool: the voxels that are
    image. Reads the -1 marker only, never a label."""
    return target[:, :1] != OUTSIDE
