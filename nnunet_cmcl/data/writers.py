"""`nnunet-cmcl synth`: the built-in datasets by name, with the command line's options and its errors."""
from __future__ import annotations

from nnunet_cmcl.errors import CMCLInputError

KINDS = ("phantom", "brain", "brats")


def write_dataset(kind: str, raw_root: str, dataset_id: int, name: str | None = None, num_cases: int = 12,
                  seed: int = 0, with_labels: bool = True, shape=None, modalities=None, spacing=None) -> str:
    """The phantom, brain or BraTS-like dataset with the given options (None = the writer's default); a bad option
    or a taken id/folder raises CMCLInputError before anything is written."""
    from nnunet_cmcl.data.brats import write_brats_dataset
    from nnunet_cmcl.data.synthetic import write_brain_dataset, write_phantom_dataset

    if kind not in KINDS:
        raise CMCLInputError(f"unknown dataset kind {kind!r}; give one of {', '.join(KINDS)}")
    options = {"num_cases": num_cases, "seed": seed, "with_labels": with_labels}
    if name:
        options["name"] = name
    if shape:
        options["shape"] = tuple(shape)
    if kind == "phantom":
        options.update({k: tuple(v) for k, v in (("modalities", modalities), ("spacing", spacing)) if v})
    elif modalities or spacing:
        raise CMCLInputError(f"--modalities and --spacing apply to phantom only; {kind} has "
                             f"{', '.join(channels_of(kind))} at ~4 mm")
    writer = {"phantom": write_phantom_dataset, "brain": write_brain_dataset, "brats": write_brats_dataset}[kind]
    try:
        return writer(raw_root, dataset_id, **options)
    except ValueError as e:  # the writers' checks of id, cases, shape and of existing folders
        raise CMCLInputError(str(e)) from e


def channels_of(kind: str) -> tuple[str, ...]:
    """The channels of the brain or BraTS-like dataset, in order (the phantom's are an option)."""
    from nnunet_cmcl.data.brats import CHANNELS
    from nnunet_cmcl.data.synthetic import BRAIN_CHANNELS

    return {"brain": BRAIN_CHANNELS, "brats": CHANNELS}[kind]
