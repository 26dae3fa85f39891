"""Compression: weight-only quantisation of the models' linear layers."""
