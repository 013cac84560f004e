"""Export a checkpoint to a Hugging Face OPT folder (sharded safetensors + index, config.json,
generation_config.json, tokenizer files) that ``AutoTokenizer`` / ``OPTForCausalLM.from_pretrained`` and
lm-evaluation-harness (``--model hf``) load.

    python launch/export.py --init_from=ckpt:workdirs/1.3b-cot/checkpoints@best_dev_score --out=exports/1.3b-cot \
        --dtype=bfloat16 [--max_shard_size=5GB]
    python launch/export.py --init_from=metaseq:consolidated.pt --size=13b --tokenizer=bpe:opt_tokenizer --out=DIR

``--init_from``: ``ckpt:DIR[@SELECT]`` | ``hf:DIR`` | ``metaseq:FILE`` (alert_jax/io/loader.py). The tokenizer is
``--tokenizer`` when given, else the one stored beside the weights; it must be byte-level BPE (alert_jax/io/export.py
says why a SentencePiece tokenizer is refused). ``--max_shard_size`` as Hugging Face writes it (``5GB`` = 5 * 10**9
bytes; ``10GiB``); every shard file, header included, stays under it.

Exit codes (alert_jax/apps/exits.py): 0 written; 2 bad input (one line naming the flag, file or path: a missing
checkpoint, a non-empty --out without --overwrite, a bad --dtype or --max_shard_size, a tokenizer that cannot be
exported); a folder this run created is removed again on failure. ``--out`` may be a bucket URL (``gs://BUCKET/DIR``),
and ``--init_from`` a bucket path (``hf:gs://...``, ``metaseq:gs://...``, ``ckpt:gs://...``).
"""

from __future__ import annotations

import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

_INIT_FROM = flags.DEFINE_string("init_from", None, "ckpt:DIR[@SELECT] | hf:DIR | metaseq:FILE")
_OUT = flags.DEFINE_string("out", None, "Output folder or bucket URL (absent or empty unless --overwrite).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Weights dtype of the export: float32 | bfloat16 | float16.")
_MAX_SHARD = flags.DEFINE_string("max_shard_size", "5GB", "Largest shard file: 5GB (decimal, as HF), 500MB, 10GiB.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Tokenizer spec (bpe:DIR); '' = the one stored beside the weights.")
_SIZE = flags.DEFINE_string("size", "", "Model size name (alert_jax/models/sizes.py); needed for metaseq: only.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the export files of a non-empty --out.")
flags.mark_flags_as_required(["init_from", "out"])


def main(argv: list[str]) -> int:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("alert_jax").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from etils import epath

    from alert_jax.apps import exits
    from alert_jax.io import export

    out = export.out_path(_OUT.value)
    existed = out.exists()

    def progress(i: int, n: int, path: epath.Path) -> None:
        print(f"export: shard {i}/{n} written: {path.name} ({path.stat().length / 1e9:.3f} GB)", flush=True)

    def run() -> None:
        try:
            export.export(_INIT_FROM.value, out, dtype=_DTYPE.value, max_shard_size=_MAX_SHARD.value,
                          tokenizer=_TOKENIZER.value, size=_SIZE.value, overwrite=_OVERWRITE.value, progress=progress)
        except BaseException:
            export.remove_if_created(out, existed)
            raise

    code = exits.run_app("export", run)
    if code == exits.DONE:
        print(f"export: {_INIT_FROM.value} -> {out} ({_DTYPE.value})", flush=True)
    return code


if __name__ == "__main__":
    app.run(main)
