"""Reads nnU-Net's validation files and checkpoints into paired statistics and reports; never trains."""
