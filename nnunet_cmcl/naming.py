"""Names and folders as nnU-Net spells them: dataset names, channel lists, trainer result folders, and the folder
of this package's trainers for ``nnUNet_extTrainer``. Built with nnU-Net's own functions where it has them."""
from __future__ import annotations

import importlib.util
import os

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunet_cmcl.errors import CMCLInputError


def dataset_name(dataset: str | int) -> str:
    """'501' or 501 or 'Dataset501_X' -> 'Dataset501_X', found in nnUNet_raw/preprocessed/results."""
    try:
        return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    except RuntimeError:
        raise CMCLInputError(f"dataset {dataset} is not in nnUNet_raw or nnUNet_preprocessed; check the id and "
                             f"the nnUNet_* paths") from None


def channel_list(channel_names: dict) -> list[str]:
    """dataset.json's channel_names {"0": "T1", "1": "T2"} -> ['T1', 'T2'], in channel order."""
    return [str(channel_names[k]) for k in sorted(channel_names, key=int)]


def trainer_folder(results_dataset_folder: str, trainer: str, plans: str, configuration: str) -> str:
    """nnU-Net's output folder of a trainer: <results>/<Dataset>/<trainer>__<plans>__<configuration>."""
    return os.path.join(results_dataset_folder, convert_trainer_plans_config_to_identifier(trainer, plans,
                                                                                           configuration))


def trainer_path() -> str:
    """The folder to put in nnUNet_extTrainer; inside the installed package, editable or not. Found without
    importing it, so this leaf module does not depend on the trainers."""
    return os.path.dirname(os.path.abspath(importlib.util.find_spec("nnunet_cmcl.trainers").origin))


def with_plugin_trainers(ext_trainer: str | None) -> str:
    """A value of nnUNet_extTrainer with this package's trainer folder in it (first), the other folders kept."""
    paths = [p for p in (ext_trainer or "").split(os.pathsep) if p]
    return os.pathsep.join(paths if trainer_path() in paths else [trainer_path(), *paths])


def find_trainer_class(name: str) -> type | None:
    """The trainer class ``-tr name`` of nnUNetv2_train would run: one of this package's, one of nnU-Net's, or one
    in a folder of ``nnUNet_extTrainer``; None when there is none."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_python_class(trainer_path(), name, "nnunet_cmcl.trainers")
    if cls is None:
        try:
            cls = recursive_find_trainer_class_by_name(name)  # nnU-Net's own search, nnUNet_extTrainer included
        except RuntimeError:
            cls = None
    return cls
