"""Pretraining plans derivation. This folder is installed as ``nnunet_cmcl.plans`` (pyproject.toml,
``[tool.setuptools.package-dir]``), beside the folders inside nnunet_cmcl/."""
