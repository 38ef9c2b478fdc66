"""Shared machinery every pipeline uses; nothing here knows about one pipeline's data.

io (atomic, located-error JSON/JSONL) -> assets (params names -> files inside PyPI
packages) -> models (materialize / load / shrink a base model) -> chat (records -> chat
messages) -> batching (length-sorted padded batches) -> launch (1 process or
`accelerate launch`) -> stats (bootstrap CIs, paired comparisons) -> plots, profiles.
"""
