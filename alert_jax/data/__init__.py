"""Data: NIV2 task files (niv2), the ALERT registry (registry), prompt templates, the rationale corpora (corpora,
examples, finetune), synthetic data, packing and the grain input pipeline, and the TFDS builders (tfds/)."""
