"""Every CMCL hyperparameter in one place; stored in the training log and in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

VIEW_STRATEGIES = ("partition", "single")


@dataclass(frozen=True)
class CMCLConfig:
    # views
    view_strategy: str = "partition"  # 'partition': complementary modality subsets; 'single': one modality a view
    num_views: int = 2  # K modality views per sample (before the optional all-channels view)
    add_full_view: bool = False  # one more view with every channel
    max_shift_steps: int = 1  # each view is a sub-crop shifted by up to this many encoder strides per axis
    # heads
    head_hidden: int = 512
    head_out: int = 128
    # loss
    temperature: float = 0.1
    weight_global: float = 1.0
    weight_dense: float = 1.0
    dense_locations: int = 64  # M bottleneck locations sampled per sample (capped by the views' overlap)
    dense_exclusion_radius: float = 1.5  # same-sample locations closer than this (bottleneck voxels) are no negatives
    # optimiser: AdamW with nnU-Net's poly schedule (nnU-Net's SGD at lr 1e-2, momentum 0.99 stalls or
    # collapses the contrastive objective)
    learning_rate: float = 3e-4
    weight_decay: float = 1e-2
    # monitoring
    collapse_std_threshold: float = 0.1  # warn when embedding std * sqrt(dim) falls below this

    def __post_init__(self) -> None:
        if self.view_strategy not in VIEW_STRATEGIES:
            raise ValueError(f"view_strategy must be one of {VIEW_STRATEGIES}, got {self.view_strategy!r}")
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2, got {self.num_views}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.weight_global < 0 or self.weight_dense < 0 or self.weight_global + self.weight_dense == 0:
            raise ValueError("weight_global and weight_dense must be >= 0 and not both 0")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")
        if self.max_shift_steps < 0 or self.dense_locations < 1 or self.head_hidden < 1 or self.head_out < 1:
            raise ValueError("max_shift_steps must be >= 0; dense_locations, head_hidden, head_out >= 1")

    @property
    def total_views(self) -> int:
        return self.num_views + int(self.add_full_view)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CMCLConfig":
        """Builds a config from a stored dict; keys unknown to this version are rejected, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CMCL config keys {sorted(unknown)}: the checkpoint comes from another version")
        return cls(**d)
