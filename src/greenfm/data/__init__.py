"""Data: the manifest, readers, importers, volumes, caches and splits.

Kept free of imports on purpose: ``import greenfm.data`` must stay cheap (MONAI,
pydicom and nibabel load only when a reader or transform that needs them runs).
"""
