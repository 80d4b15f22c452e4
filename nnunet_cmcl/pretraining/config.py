"""Every CMCL hyperparameter in one place; stored in the training log and in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

VIEW_STRATEGIES = ("partition", "single", "augment")
# fields added with a default that switches a feature on: a stored config without them was trained with it off
LEGACY_DEFAULTS = {"flip_views": False, "dense_inside_image": False, "full_view_disruption": 0.0, "queue_size": 0,
                   "dense_stages": 0, "dense_max_candidates": 0}


@dataclass(frozen=True)
class CMCLConfig:
    # views
    # 'partition': complementary modality subsets; 'single': one modality a view; 'augment': every channel in
    # every view, the views differ by random intensity changes and disruptions (for one-modality data such as CT)
    view_strategy: str = "partition"
    num_views: int = 2  # K modality views per sample (before the optional all-channels view)
    # one more view with every channel: fine-tuning feeds every channel, so the encoder should see them together.
    # Disrupted (full_view_disruption), so it is no copy of a partial view's pixels that channels could match
    add_full_view: bool = True
    max_shift_steps: int = 1  # each view is a sub-crop shifted by up to this many encoder strides per axis
    # heads
    head_hidden: int = 512
    head_out: int = 128
    # loss
    temperature: float = 0.1
    # the global (per-sample) term with its head, momentum encoder and key queue: off by default. On the CPU
    # preset's runs it added nothing downstream: CMCL with it against CMCL without it, +0.0011 [-0.0022, +0.0049]
    # class-mean Dice at 2 labeled cases and -0.0003 [-0.0028, +0.0017] at 16 (docs/study.md). 1.0 turns it on
    # (nnUNetTrainerCMCL_global); a stored config always holds this field, so checkpoints read back unchanged
    weight_global: float = 0.0
    weight_dense: float = 1.0
    dense_locations: int = 64  # M bottleneck locations sampled per sample (capped by the views' overlap)
    # same-sample locations closer than this are no negatives; in bottleneck voxels of the finest axis (physical
    # distance, so anisotropic data excludes the same neighbourhood along every axis)
    dense_exclusion_radius: float = 1.5
    # optimiser: AdamW with nnU-Net's poly schedule (nnU-Net's SGD at lr 1e-2, momentum 0.99 stalls or
    # collapses the contrastive objective)
    learning_rate: float = 3e-4
    weight_decay: float = 1e-2
    # monitoring
    collapse_std_threshold: float = 0.1  # warn when embedding std * sqrt(dim) falls below this
    # Fields below were added later. Each default switches its feature off, so a checkpoint whose stored config
    # lacks them reads back as the config it was trained with.
    # 'augment' views: intensity changes drawn per view, sample and channel (intensities are z-scores)
    augment_gamma: float = 0.0  # gamma = exp(U(-a, a)), applied on each channel's min-max range
    augment_contrast: float = 0.0  # factor U(1 - a, 1 + a) around each channel's mean
    augment_brightness: float = 0.0  # shift U(-a, a)
    # disruptions of every view, drawn per view and sample
    low_resolution_probability: float = 0.0  # chance that a view is downsampled by low_resolution_factor and back
    low_resolution_factor: int = 2
    noise_std: float = 0.0  # additive Gaussian noise of std U(0, noise_std)
    mask_ratio: float = 0.0  # fraction of the mask_block^d cubes of a view zeroed in every channel
    mask_block: int = 8  # cube edge in voxels
    # reconstruction of every channel of the undisrupted crop by nnU-Net's decoder (nnUNetTrainerCMCL_DAE)
    weight_reconstruction: float = 0.0
    # Shortcuts closed (on by default; configs stored before these fields existed read back with them off, see
    # LEGACY_DEFAULTS): views mirrored along random axes, the correspondence mapped, so a location's partner is not
    # at the same place in its view; dense locations drawn inside the image first and those outside left out of
    # the loss (off: every sampled location counts), not the padding whose silhouette is the same in every modality
    flip_views: bool = True
    dense_inside_image: bool = True
    # strength s of the full view's own disruptions: gamma, contrast and brightness changes of strength s per
    # channel, Gaussian noise of std up to s, a fraction s of its mask_block cubes zeroed
    full_view_disruption: float = 0.3
    # negatives for the global term (when weight_global > 0) from earlier steps: a queue of this many keys from a
    # momentum copy of encoder and global head (MoCo); 0 = off. At nnU-Net's batch of 2 the batch alone gives an
    # anchor 2 negatives
    queue_size: int = 1024
    key_momentum: float = 0.99
    # dense terms also on this many encoder stages above the bottleneck (1: the stage before it, whose output is
    # nnU-Net's lowest skip but one), each with its own dense head and weight_dense. Views are shifted by whole
    # bottleneck voxels, so every stage lines up; without these, the high-resolution stages that feed the skips
    # learn only through the bottleneck's loss. 2 by default, chosen by the CPU study (docs/method.md): ahead of
    # bottleneck-only CMCL in every label regime, for 0.06 of a vanilla step more
    dense_stages: int = 2
    # locations drawn per sample on each dense stage above the bottleneck, from that stage's own overlap of the
    # views (capped by it): 64 gives every standard plan at least one stage with 64 locations of its own (3d_fullres
    # 128^3: the stride-8 stage's overlap holds at least 512). Each term's logits grow as (V*B*M)^2, so a fixed number
    stage_locations: int = 64
    # a dense anchor is scored against at most this many location embeddings (0: all of the global batch's): the
    # samples are cut into groups of max(1, this // (V * M)) and an anchor's negatives come from its own group.
    # A memory bound, not a tuned value: it leaves every 3d_fullres plan's batch whole (3 views x 4 samples x 64
    # locations = 768) and holds the 2d plans' logits (132 samples x 3 views x 64 = 25,344 embeddings, 2.6 GB
    # a term in float32 unbounded) to under 0.5 GB a term (docs/standard_plans.md)
    dense_max_candidates: int = 4096

    def __post_init__(self) -> None:
        if self.view_strategy not in VIEW_STRATEGIES:
            raise ValueError(f"view_strategy must be one of {VIEW_STRATEGIES}, got {self.view_strategy!r}")
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2, got {self.num_views}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.weight_global < 0 or self.weight_dense < 0 or \
                self.weight_global + self.weight_dense + max(self.weight_reconstruction, 0) == 0:
            raise ValueError("weight_global and weight_dense must be >= 0 and not both 0 (both 0 only with "
                             "weight_reconstruction > 0: reconstruction-only pretraining)")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")
        if self.dense_max_candidates < 0:
            raise ValueError("dense_max_candidates must be >= 0 (0: no bound)")
        if self.max_shift_steps < 0 or min(self.dense_locations, self.stage_locations, self.head_hidden,
                                           self.head_out) < 1:
            raise ValueError("max_shift_steps must be >= 0; dense_locations, stage_locations, head_hidden, "
                             "head_out >= 1")
        self._check_views_and_disruptions()

    def _check_views_and_disruptions(self) -> None:
        if min(self.augment_gamma, self.augment_brightness, self.noise_std, self.weight_reconstruction) < 0 \
                or not 0 <= self.augment_contrast < 1:
            raise ValueError("augment_gamma, augment_brightness, noise_std, weight_reconstruction must be >= 0 "
                             "and augment_contrast in [0, 1)")
        if not 0 <= self.low_resolution_probability <= 1 or self.low_resolution_factor < 2:
            raise ValueError("low_resolution_probability must be in [0, 1] and low_resolution_factor >= 2")
        if not 0 <= self.full_view_disruption < 1:
            raise ValueError("full_view_disruption must be in [0, 1)")
        if self.queue_size < 0 or not 0 <= self.key_momentum < 1:
            raise ValueError("queue_size must be >= 0 and key_momentum in [0, 1)")
        if self.dense_stages < 0 or (self.dense_stages and self.weight_dense == 0):
            raise ValueError("dense_stages must be >= 0, and > 0 only with weight_dense > 0: set dense_stages=0 "
                             "together with weight_dense=0")
        if not 0 <= self.mask_ratio < 1 or self.mask_block < 1:
            raise ValueError("mask_ratio must be in [0, 1) and mask_block >= 1")
        if self.view_strategy == "augment":
            if self.add_full_view:
                raise ValueError("add_full_view does not apply to 'augment' views: each of them has every channel")
            if not any((self.augment_gamma, self.augment_contrast, self.augment_brightness,
                        self.low_resolution_probability, self.noise_std, self.mask_ratio)):
                raise ValueError("'augment' views need at least one augment_* or disruption parameter > 0, "
                                 "else they differ by their shift only")

    @property
    def total_views(self) -> int:
        return self.num_views + int(self.add_full_view)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CMCLConfig":
        """Builds a config from a stored dict; keys unknown to this version are rejected, not ignored.

        Missing keys take the value that the version which stored the config used: LEGACY_DEFAULTS for features
        that are on by default now, else the default (fields added later with an off default).
        """
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CMCL config keys {sorted(unknown)}: the checkpoint comes from another version")
        return cls(**{**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}, **d})


def parse_changes(text: str) -> dict:
    """'queue_size=0,flip_views=false' -> {'queue_size': 0, 'flip_views': False}, typed by CMCLConfig's fields
    (for scripts that compare settings); 'default' or '' -> {}."""
    if text in ("", "default"):
        return {}
    types = {f.name: f.type for f in fields(CMCLConfig)}
    changes = {}
    for item in text.split(","):
        key, value = item.split("=")
        if key not in types:
            raise ValueError(f"{key} is not a CMCLConfig field")
        kind = types[key]
        changes[key] = (value.lower() == "true" if kind == "bool" else int(value) if kind == "int"
                        else float(value) if kind == "float" else value)
    return changes
