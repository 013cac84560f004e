#!/bin/bash
# alert-jax run ${run_name} on a TPU VM slice: the same command on every worker; jax.distributed.initialize()
# discovers the slice from the TPU metadata.
set -euo pipefail
${commands}
