"""What a run of one of this package's trainers was trained with, beyond the folder name nnU-Net gives it.

nnU-Net names a fold folder by trainer, plans and configuration only. When a trainer's defaults change (CMCL's
global term went off by default, a budget was resized), an old folder still carries the name and would pass for
a run of today's trainer. So the package's trainers write ``cmcl_settings.json`` into their fold folder: the
class name and every plain-data setting its classes in this package define (``cmcl_config``, ``overrides``,
schedules, budgets). ``settings_mismatch`` compares it with what the class would train now.
"""
from __future__ import annotations

import dataclasses
import json
import os

from nnunet_cmcl.atomic import write_json_atomically

SETTINGS_FILE = "cmcl_settings.json"
_PLAIN = (bool, int, float, str, type(None), tuple, list, dict)


def _plain(value):
    """The JSON form of a setting (dataclasses as dicts, tuples as lists); None if it is not plain data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, _PLAIN):
        try:
            return json.loads(json.dumps(value))
        except (TypeError, ValueError):
            return None
    return None


def trainer_settings(cls: type) -> dict:
    """{"trainer": class name, "settings": {name: value}}: the public plain-data class attributes defined by the
    classes of this package (and of nnUNet_extTrainer folders) in the MRO, the most derived winning; nnU-Net's own
    classes are left out, their defaults are nnU-Net's version, not the trainer's."""
    settings = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith(("nnunetv2.", "builtins")):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or callable(value) or isinstance(value, (property, classmethod, staticmethod)):
                continue
            plain = _plain(value)
            if plain is not None or value is None:
                settings[name] = plain
    return {"trainer": cls.__name__, "settings": settings}


def write_trainer_settings(trainer: object, output_folder: str) -> None:
    """The trainer's settings into its fold folder (atomically: a kill leaves the old file or the new one)."""
    write_json_atomically(trainer_settings(type(trainer)), os.path.join(output_folder, SETTINGS_FILE))


def settings_mismatch(cls: type, fold_folder: str) -> str | None:
    """None when the folder's run was trained with ``cls``'s settings of now; else what differs, in words."""
    path = os.path.join(fold_folder, SETTINGS_FILE)
    if not os.path.isfile(path):
        return f"it has no {SETTINGS_FILE} (trained by an earlier nnunet-cmcl)"
    with open(path) as f:
        stored = json.load(f)
    expected = trainer_settings(cls)
    if stored.get("trainer") != expected["trainer"]:
        return f"it was trained by {stored.get('trainer')}, not {expected['trainer']}"
    changed = _differences(stored.get("settings", {}), expected["settings"])
    return f"its settings differ from the trainer's now ({'; '.join(changed)})" if changed else None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every differing key, one level into nested settings (cmcl_config.weight_global)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _differences(a, b, f"{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
