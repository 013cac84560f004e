"""grain pipeline: per-process shards, per-epoch reshuffle, exact resume from a saved state, eval pass, global arrays."""

from __future__ import annotations

import collections
import json

import jax
import numpy as np
import pytest

from alert_jax.data import pipeline
from alert_jax.parallel.sharding import batch_sharding, make_mesh


class CharTokenizer:
    """Stand-in tokenizer: one token per character (ord + 3), OPT special ids: pad 1, bos = eos 2."""

    pad_id, bos_id, eos_id = 1, 2, 2
    vocab_size = 0x110000 + 3

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        return ([self.bos_id] if add_bos else []) + [ord(c) + 3 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i - 3) for i in ids if i > 2)


class RecordingSource:
    """A random-access source that remembers which records were read."""

    def __init__(self, records):
        self.records = records
        self.read: set[int] = set()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        self.read.add(int(index))
        return self.records[index]


def make_records(n: int) -> list[tuple[str, str]]:
    # Prompt "<id>?" (plus filler so lengths vary), target " a<id>": the id can be read back from packed rows.
    return [(f"{i}?" + "." * (i % 5), f" a{i}") for i in range(n)]


def example_ids(batch: dict[str, np.ndarray]) -> list[int]:
    """Record ids of the examples in a batch, row by row, segment by segment (decoded from the tokens)."""
    tok = CharTokenizer()
    out = []
    for r in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][r]
        for s in range(1, int(seg.max(initial=0)) + 1):
            text = tok.decode(batch["inputs"][r][seg == s])
            out.append(int(text.split("?")[0]))
    return out


def make_iter(source, **kw):
    defaults = dict(seq_len=24, batch_size=2, seed=5, shard_index=0, shard_count=1, pack_chunk_examples=7,
                    max_open_rows=3)
    defaults.update(kw)
    return pipeline.make_train_iterator(source, CharTokenizer(), **defaults)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_fields_shapes_and_dtypes():
    it = make_iter(make_records(30))
    batch = next(it)
    assert set(batch) == {"inputs", "targets", "segment_ids", "positions", "loss_mask"}
    for k, v in batch.items():
        assert v.shape == (2, 24), k
        assert v.dtype == (np.float32 if k == "loss_mask" else np.int32), k
    # Loss only on the target (" a<id>" + eos) of every segment.
    tok = CharTokenizer()
    for r in range(2):
        for s in range(1, int(batch["segment_ids"][r].max()) + 1):
            cols = batch["segment_ids"][r] == s
            trained = batch["targets"][r][cols][batch["loss_mask"][r][cols] > 0]
            ex_id = example_ids({k: v[r:r + 1] for k, v in batch.items()})[s - 1]
            assert list(trained) == tok.encode(f" a{ex_id}") + [tok.eos_id]


def test_two_processes_read_disjoint_shards_covering_the_dataset():
    records = make_records(37)
    seen, reads = [], []
    for index in range(2):
        src = RecordingSource(records)
        it = make_iter(src, shard_index=index, shard_count=2, num_epochs=1, drop_remainder=False)
        ids = [i for batch in it for i in example_ids(batch)]
        assert len(ids) == len(set(ids))  # one epoch: each record once
        seen.append(set(ids))
        reads.append(src.read)
        assert src.read == set(range(index, 37, 2))  # each host touches ONLY its own records
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(37))


def test_epochs_are_reshuffled_and_seeded():
    records = make_records(20)
    # One example per row and one row per batch: the stream of ids is the example order.
    def order(seed, epochs=2):
        it = make_iter(records, seed=seed, batch_size=1, max_open_rows=0, num_epochs=epochs)
        return [example_ids(b)[0] for b in it]

    a = order(seed=5)
    assert len(a) == 40 and sorted(a[:20]) == sorted(a[20:]) == list(range(20))
    assert a[:20] != a[20:]  # epoch 2 is shuffled differently
    assert a[:20] != list(range(20))
    assert order(seed=5) == a  # deterministic
    assert order(seed=6) != a


@pytest.mark.parametrize("consumed", [0, 1, 3, 4, 9, 17])
def test_restored_iterator_continues_exactly(consumed):
    records = make_records(23)  # several chunks (7 examples) and epochs (23 records) within 30 batches
    reference = make_iter(records)
    for _ in range(consumed):
        next(reference)
    state = json.loads(json.dumps(reference.get_state()))  # must be JSON-serialisable
    expected = [next(reference) for _ in range(12)]

    restored = make_iter(records)
    restored.set_state(state)
    assert_batches_equal([next(restored) for _ in range(12)], expected)
    assert restored.stats == reference.stats  # packing statistics are part of the state


def test_restore_on_first_chunk_boundary_and_with_stats():
    records = make_records(23)
    it = make_iter(records, pack_chunk_examples=4, batch_size=1)
    states, batches = [], []
    for _ in range(15):
        states.append(it.get_state())
        batches.append(next(it))
    for k in (0, 5, 14):
        other = make_iter(records, pack_chunk_examples=4, batch_size=1)
        other.set_state(states[k])
        assert_batches_equal([next(other) for _ in range(15 - k)], batches[k:])
    assert it.stats.rows == 15 and it.stats.examples > 15


def test_restore_with_different_settings_is_refused():
    records = make_records(23)
    state = make_iter(records).get_state()
    with pytest.raises(ValueError, match="seq_len: saved 24 vs now 32"):
        make_iter(records, seq_len=32).set_state(state)
    with pytest.raises(ValueError, match="shard_count"):
        make_iter(records, shard_index=0, shard_count=2).set_state(state)


def test_grain_orbax_checkpoint_handler_roundtrip(tmp_path):
    grain = pytest.importorskip("grain")
    from etils import epath

    records = make_records(23)
    it = make_iter(records)
    for _ in range(5):
        next(it)
    grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), it)
    expected = [next(it) for _ in range(4)]
    restored = grain.checkpoint.CheckpointHandler().restore(epath.Path(tmp_path), make_iter(records))
    assert_batches_equal([next(restored) for _ in range(4)], expected)


def test_truncation_is_counted():
    records = [("x" * 40, " y")] + make_records(10)
    it = make_iter(records, num_epochs=1, drop_remainder=False, shuffle=False)
    batches = list(it)
    assert it.stats.truncated == 1 and it.stats.examples == 11
    assert sum((b["segment_ids"] > 0).sum() for b in batches) == it.stats.tokens


def test_dict_and_bytes_records():
    records = [{"prompt": b"1?", "target": b" a1"}, {"prompt": "2?", "target": " a2", "source": "x"}]
    it = make_iter(records, num_epochs=1, drop_remainder=False, shuffle=False)
    assert sorted(i for b in it for i in example_ids(b)) == [1, 2]
    with pytest.raises(KeyError, match="'prompt' and 'target'"):
        pipeline.record_to_pair({"input": "x"})


def test_eval_iterator_one_deterministic_padded_pass():
    records = make_records(13)
    ev = pipeline.make_eval_iterator(records, CharTokenizer(), seq_len=24, batch_size=4, shard_index=0,
                                     shard_count=1)
    batches = list(ev)
    assert len(batches) == len(ev) and len(ev) >= 1
    ids = [i for b in batches for i in example_ids(b)]
    assert sorted(ids) == list(range(13)) and ids == sorted(ids)  # source order, each once
    assert_batches_equal(list(ev), batches)  # re-iterable, deterministic
    assert len(ev) == -(-ev.stats.rows // 4)
    stacked = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    empty = stacked["segment_ids"].max(axis=1) == 0
    assert empty.sum() == 4 * len(ev) - ev.stats.rows and not empty[: ev.stats.rows].any()  # padding rows at the end
    assert (stacked["loss_mask"][empty] == 0).all() and (stacked["inputs"][empty] == CharTokenizer.pad_id).all()

    # unpacked, padded to more batches (as when another host needs more), sharded
    ev2 = pipeline.make_eval_iterator(records, CharTokenizer(), seq_len=24, batch_size=4, shard_index=1,
                                      shard_count=2, pack=False, num_batches=3)
    batches2 = list(ev2)
    assert len(batches2) == 3
    assert [i for b in batches2 for i in example_ids(b)] == list(range(1, 13, 2))
    assert all(b["segment_ids"].max(axis=1).max() <= 1 for b in batches2)  # one example per row
    assert batches2[-1]["loss_mask"].sum() == 0
    with pytest.raises(ValueError, match="num_batches=1 is too small"):
        pipeline.make_eval_iterator(records, CharTokenizer(), seq_len=24, batch_size=1, shard_index=0,
                                    shard_count=1, num_batches=1)


def test_to_global_batch_on_2x2x2_mesh():
    assert jax.device_count() >= 8, "conftest sets 8 fake CPU devices"
    mesh = make_mesh((2, 2, 2))
    assert pipeline.process_shard(mesh) == (0, 1) and pipeline.process_shard() == (0, 1)
    it = make_iter(make_records(40), batch_size=8)
    batch = next(it)
    out = pipeline.to_global_batch(batch, mesh)
    assert out.keys() == batch.keys()
    want = batch_sharding(mesh)
    for k, arr in out.items():
        assert isinstance(arr, jax.Array) and arr.shape == batch[k].shape and arr.dtype == batch[k].dtype
        assert arr.sharding.is_equivalent_to(want, 2), k
        np.testing.assert_array_equal(np.asarray(arr), batch[k])
        # rows are split 4 ways over (data, fsdp) and replicated over tensor
        shards = collections.Counter(s.index[0].start for s in arr.addressable_shards)
        assert {s.data.shape for s in arr.addressable_shards} == {(2, 24)}
        assert shards == {0: 2, 2: 2, 4: 2, 6: 2}
        for s in arr.addressable_shards:
            np.testing.assert_array_equal(np.asarray(s.data), batch[k][s.index])
    with pytest.raises(ValueError, match="divisible by 4"):
        pipeline.to_global_batch({k: v[:6] for k, v in batch.items()}, mesh)
