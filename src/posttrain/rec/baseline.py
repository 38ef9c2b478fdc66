"""Non-LLM baseline for "will the user like this movie?": logistic regression on two
train-only statistics, the user's like-rate and the movie's mean rating.

No leakage: the statistics come only from train rows (targets of the train split),
and for a train row its own rating is left out of its features (leave-one-out), so
the model cannot learn to read the label from a feature. Unseen users or movies get
the train-wide prior (statistics are shrunk towards it with `prior_weight`
pseudo-ratings).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class LikeRateBaseline:
    def __init__(self, *, seed: int, prior_weight: float = 5.0):
        self.prior_weight, self.seed = prior_weight, seed

    def fit(self, train_rows: list[dict]) -> "LikeRateBaseline":
        from sklearn.linear_model import LogisticRegression

        if not train_rows:
            raise ValueError("baseline needs train rows")
        self.user_likes, self.user_n = defaultdict(float), defaultdict(int)
        self.item_sum, self.item_n = defaultdict(float), defaultdict(int)
        for r in train_rows:
            self.user_likes[r["user_id"]] += r["label"]
            self.user_n[r["user_id"]] += 1
            self.item_sum[r["item_id"]] += r["rating"]
            self.item_n[r["item_id"]] += 1
        self.like_rate = float(np.mean([r["label"] for r in train_rows]))
        self.mean_rating = float(np.mean([r["rating"] for r in train_rows]))
        x = self._features(train_rows, leave_one_out=True)
        y = np.array([r["label"] for r in train_rows], dtype=int)
        self.model = LogisticRegression(random_state=self.seed).fit(x, y)
        return self

    def _features(self, rows, leave_one_out: bool) -> np.ndarray:
        k = self.prior_weight
        feats = []
        for r in rows:
            u, i = r["user_id"], r["item_id"]
            likes, n = self.user_likes.get(u, 0.0), self.user_n.get(u, 0)
            total, m = self.item_sum.get(i, 0.0), self.item_n.get(i, 0)
            if leave_one_out:
                likes, n, total, m = likes - r["label"], n - 1, total - r["rating"], m - 1
            feats.append(((likes + k * self.like_rate) / (n + k), (total + k * self.mean_rating) / (m + k)))
        return np.asarray(feats, dtype=np.float64)

    def predict_proba(self, rows: list[dict]) -> np.ndarray:
        return self.model.predict_proba(self._features(rows, leave_one_out=False))[:, 1]
