"""Adaptation of frozen or trainable backbones to labelled tasks.

Kept import-free so that ``greenfm.adapt.lora`` does not pull in scikit-learn and
``greenfm.adapt.linear_probe`` does not pull in torch: import the module you need,
e.g. ``from greenfm.adapt.linear_probe import probe``.
"""
