"""Whole applications the launchers run: the offline demo (demo/), the memory planner (plan) and sweeps (sweep)."""
