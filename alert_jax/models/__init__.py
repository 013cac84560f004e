"""The OPT model: the Flax NNX module (opt), attention, the size table and config (sizes), and the weights
decoding reads (decode_weights)."""
