"""The final validation without test-time mirroring, for trainers whose comparisons time it on 2 cores."""
from __future__ import annotations


class UnmirroredFinalValidation:
    """Mixin: the final validation without test-time mirroring (4 passes per 2d slice instead of 1: 86 s instead
    of about 20 s for the CPU preset's 24 validation cases on 2 cores), the same for every arm of a comparison.
    Training and its augmentation (mirroring included) are nnU-Net's."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        out = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None  # read by the final validation's predictor only
        return out
