"""Non-LLM baseline for "will the user like this movie?": logistic regression on two
train-only statistics, the user's like-rate and the movie's mean rating.

Both are scikit-learn `TargetEncoder`s (user -> mean label, movie -> mean rating),
shrunk towards the train-wide mean with `prior_weight` pseudo-ratings (`smooth`).
No leakage: the statistics come only from train rows (targets of the train split),
and a train row's own features are cross-fitted (computed on the other `folds` folds),
so the model cannot learn to read the label from a feature. Unseen users or movies get
the train-wide mean.
"""

from __future__ import annotations

import numpy as np


class LikeRateBaseline:
    def __init__(self, *, seed: int, prior_weight: float = 5.0, folds: int = 5):
        self.prior_weight, self.folds, self.seed = prior_weight, folds, seed

    def fit(self, train_rows: list[dict]) -> "LikeRateBaseline":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import KFold
        from sklearn.preprocessing import TargetEncoder

        if not train_rows:
            raise ValueError("baseline needs train rows")
        # One seeded split for both encoders: a row is held out of both of its statistics.
        cv = KFold(min(self.folds, len(train_rows)), shuffle=True, random_state=self.seed)
        self.user_enc = TargetEncoder(target_type="continuous", smooth=self.prior_weight, cv=cv)
        self.item_enc = TargetEncoder(target_type="continuous", smooth=self.prior_weight, cv=cv)
        users, items = self._columns(train_rows)
        y = np.array([r["label"] for r in train_rows], dtype=int)
        ratings = np.array([r["rating"] for r in train_rows], dtype=np.float64)
        # fit_transform cross-fits; transform (test rows) uses all train rows.
        self.train_features_ = np.hstack([self.user_enc.fit_transform(users, y.astype(np.float64)),
                                          self.item_enc.fit_transform(items, ratings)])
        self.model = LogisticRegression(random_state=self.seed).fit(self.train_features_, y)
        return self

    @staticmethod
    def _columns(rows) -> tuple[np.ndarray, np.ndarray]:
        users = np.array([[str(r["user_id"])] for r in rows], dtype=object)
        items = np.array([[str(r["item_id"])] for r in rows], dtype=object)
        return users, items

    def features(self, rows: list[dict]) -> np.ndarray:
        """[like-rate, mean rating] of unseen rows, from all train rows."""
        users, items = self._columns(rows)
        return np.hstack([self.user_enc.transform(users), self.item_enc.transform(items)])

    def predict_proba(self, rows: list[dict]) -> np.ndarray:
        return self.model.predict_proba(self.features(rows))[:, 1]
