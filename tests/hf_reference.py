"""Random Hugging Face PyTorch OPT models: the independent reference for parity tests (Levanter-style round trips)."""

from __future__ import annotations

from typing import Any


def random_hf_opt(seed: int = 0, **config: Any):
    """``transformers.OPTForCausalLM`` in eval mode with weights drawn from N(0, 0.15) (LayerNorm scales around 1),
    large enough that every layer visibly changes the logits; ``config`` = ``transformers.OPTConfig`` fields."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.OPTForCausalLM(transformers.OPTConfig(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.15)
            if "layer_norm.weight" in name:
                p.add_(1.0)
    return model
