#!/bin/bash
# alert-jax run ${run_name} on a TPU VM slice: the same command on every worker; jax.distributed.initialize()
# discovers the slice from the TPU metadata.
# Exit 75 from training = stopped early (preemption, SIGTERM) with a checkpoint saved: set -e stops here without
# evaluating the partial model; rerun this script to continue.
set -euo pipefail
${commands}
