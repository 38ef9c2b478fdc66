"""rec: MovieLens ratings -> "will this user like this movie? Yes/No" SFT -> AUC.

Data flows movielens (any source -> one ratings table) -> alpaca (per-user timelines ->
Alpaca examples, chronological split) -> tokenization (chat template, prompt masked,
truncation) + seqlen (length report) -> lora (LoRA/QLoRA SFT) -> scoring (P(Yes) vs
P(No) at the answer token) beside baseline (like-rate logistic regression).
"""
