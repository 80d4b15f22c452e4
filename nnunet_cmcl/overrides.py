"""``overrides`` of trainer variants, checked: a misspelt key must not silently become a new attribute."""
from __future__ import annotations

import difflib

from nnunet_cmcl.errors import CMCLInputError


def apply_overrides(trainer: object, overrides: dict) -> None:
    """Sets ``trainer.<key> = value`` for every item; a key that is not an attribute of the trainer is refused.

    Called at the end of a trainer's ``__init__``, after nnU-Net has set its defaults (num_epochs, ...).
    """
    known = set(dir(trainer))
    for key in overrides:
        if key not in known:
            near = difflib.get_close_matches(key, [k for k in known if not k.startswith("__")], n=1)
            hint = f"did you mean {near[0]!r}?" if near else "see the trainer's attributes"
            raise CMCLInputError(f"{type(trainer).__name__}.overrides has key {key!r}, which is not an attribute of "
                                 f"the trainer ({hint}); correct the key")
    vars(trainer).update(overrides)
