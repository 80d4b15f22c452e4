"""Pretraining plans derivation (installed as ``nnunet_cmcl.plans``)."""
