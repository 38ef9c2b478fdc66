"""pref: preference pairs -> density-aware reward model -> DPO and GRPO.

Data flows pairs (source loaders -> normalized pairs) -> prefixes (dedup by first user
message) -> embedding (cached sentence embeddings) -> density (k-NN density -> sampling
weights; projection for viewing) -> weighted_sampler (rank-aware weighted draws) ->
reward (Bradley-Terry RM), then dpo and grpo (policy training, GRPO rewarded by the RM).
common holds what the three trainers share (split, buckets, text rendering).
"""
