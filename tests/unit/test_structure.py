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
from nnunet_cmcl.trainer_catalog import BUDGETS_FOLDER, CATALOG, catalog_text, shim_names

# each layer may import only those after it, and leaf modules
LAYERS = ("cli", "study", "evaluation", "transfer", "pretraining")
LEAF_ONLY_LAYERS = ("evaluation",)  # reads nnU-Net's outputs and never trains: no other layer of the package


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
    public, budgets = shim_names(folder), shim_names(os.path.join(folder, BUDGETS_FOLDER))
    for package, shims in (("nnunet_cmcl.trainers", public), (f"nnunet_cmcl.trainers.{BUDGETS_FOLDER}", budgets)):
        for shim in shims:  # every module of the folders imports, and holds a public trainer of the package
            module = importlib.import_module(f"{package}.{shim}")
            assert getattr(module, shim, None) is trainers.get(shim), shim
    assert set(public) | set(budgets) == set(trainers) and not set(public) & set(budgets)
    assert len(public) <= 24 and all(name.endswith(("_cpuPreset", "_demo")) for name in budgets)
    for name, cls in trainers.items():  # as nnUNetv2_train -tr NAME looks for it in nnUNet_extTrainer, subfolders too
        assert recursive_find_python_class(folder, name, None, base_folder=folder) is cls, name


def test_the_trainer_listing_names_every_public_trainer_once():
    listed = [name for _, _, group in CATALOG for name in group]
    assert sorted(listed) == shim_names(trainer_path())
    text = catalog_text()
    assert all(f"  {name} " in text for name in listed) and "nnUNetTrainerCMCL_cpuPreset" in text


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
            if layer in LEAF_ONLY_LAYERS:
                assert target == layer or target not in LAYERS + ("plans", "trainers"), f"{module} imports {imported}"
            if layer not in LAYERS and layer != "plans":  # leaf modules and data/ import leaf modules only
                assert target not in LAYERS + ("plans", "trainers"), f"{module} imports {imported}"
