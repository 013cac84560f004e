"""The offline demo: the stages (run) and the three-model comparison report (comparison)."""
