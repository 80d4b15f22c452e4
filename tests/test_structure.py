"""The package's shape: every public trainer reachable by nnU-Net's class finder through the trainers folder,
layers that import one way, and a command line that is parsing only."""
import importlib
import inspect
import os
import pkgutil

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

import nnunet_cmcl
from nnunet_cmcl.naming import trainer_path

LAYERS = ("cli", "study", "transfer", "pretraining")  # each may import only those after it, and leaf modules


def library_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(nnunet_cmcl.__path__, "nnunet_cmcl.")
            if m.name not in ("nnunet_cmcl.trainers", "nnunet_cmcl.plans")
            and not m.name.startswith(("nnunet_cmcl.trainers.", "nnunet_cmcl.plans."))]


def public_trainers() -> dict[str, type]:
    found = {}
    for name in library_modules():
        for cls_name, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, nnUNetTrainer) and cls.__module__ == name and not cls_name.startswith("_"):
                found[cls_name] = cls
    return found


def test_every_public_trainer_has_a_shim_that_nnunet_finds():
    trainers = public_trainers()
    assert {"nnUNetTrainerCMCL", "nnUNetTrainerCMCLFinetune", "nnUNetTrainerCMCL_DAE"} <= set(trainers)
    folder = trainer_path()
    shims = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")
    for shim in shims:  # every module of the folder imports, and holds a public trainer of the package
        module = importlib.import_module(f"nnunet_cmcl.trainers.{shim}")
        assert getattr(module, shim, None) is trainers.get(shim), shim
    assert set(shims) == set(trainers)
    for name, cls in trainers.items():  # as nnUNetv2_train -tr NAME looks for it in nnUNet_extTrainer
        assert recursive_find_python_class(folder, name, "nnunet_cmcl.trainers") is cls, name


def _imported_nnunet_cmcl_modules(module_name: str) -> set[str]:
    source = inspect.getsource(importlib.import_module(module_name))
    lines = [line.strip() for line in source.splitlines()]
    return {line.split()[1] for line in lines if line.startswith(("from nnunet_cmcl", "import nnunet_cmcl"))}


def test_layers_import_one_way():
    for module in library_modules():
        layer = module.split(".")[1]
        for imported in _imported_nnunet_cmcl_modules(module):
            parts = imported.split(".")
            target = parts[1] if len(parts) > 1 else ""
            assert target != "cli" or layer == "cli", f"{module} imports the command line"
            if layer in LAYERS and target in LAYERS:
                assert LAYERS.index(target) >= LAYERS.index(layer), f"{module} imports {imported}"
            if layer not in LAYERS and layer != "plans":  # leaf modules and data/ import leaf modules only
                assert target not in LAYERS + ("plans", "trainers"), f"{module} imports {imported}"
