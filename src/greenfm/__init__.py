"""greenfm: build, adapt and evaluate medical-imaging foundation models on modest hardware."""

__version__ = "0.1.0"
