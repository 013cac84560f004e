"""Finetuning: the run built in named steps (run), the step loop and its hooks (loop), the jitted steps (step), the
train state, the optimizer, the training records (records), what is logged (metrics) and FLOPs / MFU (flops)."""
