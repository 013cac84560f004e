"""Evaluation: KV-cache decoding (generate), stop strings (stops), metrics, the runner and the report."""
