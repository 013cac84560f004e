"""Everything read from or written to disk: orbax checkpoints (checkpoint), Hugging Face / metaseq conversion (convert,
weight_files), THE ``init_from`` model loader (loader), tokenizers and atomic file writes (files)."""
