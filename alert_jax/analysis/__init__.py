"""The paper's analyses over several evaluation runs: scale table, template memorization, vocabulary overlap,
checkpoint selection."""
