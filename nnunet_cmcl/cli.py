"""The ``nnunet-cmcl`` command."""
from __future__ import annotations

import argparse
import os
import sys

from nnunet_cmcl import __version__


def trainer_path() -> str:
    """The folder to put in nnUNet_extTrainer; inside the installed package, editable or not."""
    import nnunet_cmcl.trainers

    return os.path.dirname(os.path.abspath(nnunet_cmcl.trainers.__file__))


def _cmd_trainer_path(args: argparse.Namespace) -> int:
    print(trainer_path())
    return 0


def _cmd_trainers(args: argparse.Namespace) -> int:
    names = sorted(f[:-3] for f in os.listdir(trainer_path()) if f.startswith("nnUNetTrainer") and f.endswith(".py"))
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-cmcl",
        description="Cross-modal contrastive pretraining for nnU-Net v2. Make the trainers visible to nnU-Net with "
                    "`export nnUNet_extTrainer=$(nnunet-cmcl trainer-path)`, then pretrain with "
                    "`nnUNetv2_train D C all -tr nnUNetTrainerCMCL`.")
    parser.add_argument("--version", action="version", version=f"nnunet-cmcl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("trainer-path", help="print the folder to put in nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainer_path)
    p = sub.add_parser("trainers", help="list the trainer classes this plugin adds to nnU-Net")
    p.set_defaults(func=_cmd_trainers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
