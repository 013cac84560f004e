"""Sharding and hosts: the mesh, THE logical-axis rule table and THE fit rule (sharding), parameter and optimizer
shardings with the "sufficiently sharded" check (param_sharding), multi-host start-up and cross-process helpers
(distributed)."""
