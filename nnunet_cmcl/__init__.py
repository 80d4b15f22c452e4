"""Cross-modal contrastive pretraining for nnU-Net v2.

Layers, one folder each; imports run one way, cli -> study -> transfer -> pretraining -> leaf modules:

- ``pretraining/``: the CMCL method and its trainers (``nnUNetTrainerCMCL`` and variants)
- ``transfer/``: fine-tuning (``nnUNetTrainerCMCLFinetune``), inspect/verify/export, ``prepare``
- ``study/``: label-fraction folds, experiment, compare and report, missing-modality evaluation, demo
- ``data/``: built-in datasets and data checks (imports leaf modules only)
- leaf modules: ``errors``, ``atomic``, ``checkpoints``, ``dist``, ``launch`` (each DDP rank's device), ``naming``,
  ``overrides``, ``host_syncs``; ``train``: the torchrun entry (``python -m nnunet_cmcl.train``)
- ``cli``: argument parsing of the ``nnunet-cmcl`` command, nothing else

Two subpackages live outside this folder: ``nnunet_cmcl.trainers`` is the top-level ``trainers/`` folder (the one
``nnUNet_extTrainer`` points at) and ``nnunet_cmcl.plans`` is the top-level ``plans/`` folder; pyproject.toml maps
them (``[tool.setuptools.package-dir]``), for editable and regular installs alike.
"""
__version__ = "0.1.0"
