#!/usr/bin/env python3
"""Reference values for tests/decoders.rs, from scikit-learn.

Writes tests/fixtures/classifier_reference.json: small seeded Gaussian datasets and what
scikit-learn computes on them —

- LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto" and a fixed 0.3) predict_proba;
- SVC(kernel="linear") and SVC(kernel="rbf", gamma="scale") decision_function (binary), and
  OneVsRestClassifier(SVC(kernel="rbf", gamma="scale")) decision_function (three classes);
- roc_auc_score and cohen_kappa_score on fixed vectors (with ties).

Features are rounded to float32 before anything is fitted, because the Rust decoders receive
f32: both sides then see bit-identical inputs.

Usage:  pip install numpy scikit-learn && python3 scripts/classifier_reference.py
"""

import json
import pathlib

import numpy as np
import sklearn
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import SVC

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/classifier_reference.json"


def gaussian_classes(rng, n_per_class, n_features, shift, scales):
    """Overlapping Gaussian classes; class k is shifted by `shift` along a few axes."""
    xs, ys = [], []
    for k, n in enumerate(n_per_class):
        mean = np.zeros(n_features)
        mean[k % n_features] += shift
        mean[(k + 2) % n_features] -= shift / 2
        # A shared random correlation so the covariance is not diagonal.
        x = rng.standard_normal((n, n_features)) @ MIX[:n_features, :n_features] + mean
        xs.append(x)
        ys.append(np.full(n, k))
    x = np.vstack(xs) * scales
    y = np.concatenate(ys)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32).astype(np.float64), y[order]


def rows(a):
    return [[float(v) for v in r] for r in a]


def lda(x, y, xt, shrinkage):
    m = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x, y)
    return rows(m.predict_proba(xt))


rng = np.random.RandomState(20240611)
MIX = np.eye(10) + 0.3 * rng.standard_normal((10, 10))

# Two classes, 60 training × 10 features (feature scales over two decades), 40 test.
scales2 = np.logspace(-1, 1, 10)
x2, y2 = gaussian_classes(rng, [30, 30], 10, 1.5, scales2)
x2t, y2t = gaussian_classes(rng, [20, 20], 10, 1.5, scales2)
lin = SVC(kernel="linear", C=1.0).fit(x2, y2)
rbf = SVC(kernel="rbf", C=1.0, gamma="scale").fit(x2, y2)
binary = {
    "x": rows(x2),
    "y": y2.tolist(),
    "x_test": rows(x2t),
    "lda_auto_proba": lda(x2, y2, x2t, "auto"),
    "lda_fixed_shrinkage": 0.3,
    "lda_fixed_proba": lda(x2, y2, x2t, 0.3),
    "svc_linear_decision": lin.decision_function(x2t).tolist(),
    "svc_linear_n_support": int(lin.n_support_.sum()),
    "svc_rbf_gamma": float(rbf._gamma),
    "svc_rbf_decision": rbf.decision_function(x2t).tolist(),
    "svc_rbf_n_support": int(rbf.n_support_.sum()),
}

# Three classes, 90 × 6 (unequal class sizes so the priors matter), 45 test.
scales3 = np.array([1.0, 0.5, 2.0, 1.0, 3.0, 0.2])
x3, y3 = gaussian_classes(rng, [35, 30, 25], 6, 2.0, scales3)
x3t, y3t = gaussian_classes(rng, [15, 15, 15], 6, 2.0, scales3)
ovr = OneVsRestClassifier(SVC(kernel="rbf", C=1.0, gamma="scale")).fit(x3, y3)
multiclass = {
    "x": rows(x3),
    "y": y3.tolist(),
    "x_test": rows(x3t),
    "lda_auto_proba": lda(x3, y3, x3t, "auto"),
    "ovr_rbf_decision": rows(ovr.decision_function(x3t)),
}

# Fewer examples than features (12 × 20): the empirical covariance is singular and only the
# shrinkage makes LDA well defined — the tangent-space situation in miniature.
MIX = np.eye(20) + 0.2 * rng.standard_normal((20, 20))
xs, ys = gaussian_classes(rng, [6, 6], 20, 2.0, np.ones(20))
xst, _ = gaussian_classes(rng, [5, 5], 20, 2.0, np.ones(20))
small_n = {
    "x": rows(xs),
    "y": ys.tolist(),
    "x_test": rows(xst),
    "lda_auto_proba": lda(xs, ys, xst, "auto"),
}

auc_cases = []
for scores, positives in [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]),
    ([0.5, 0.5, 0.5, 0.2, 0.9, 0.2, 0.7], [1, 0, 1, 0, 1, 1, 0]),
    ([1, 2, 2, 3, 3, 3, 4, 0, 2, 3], [0, 0, 1, 1, 0, 1, 1, 0, 1, 0]),
]:
    auc_cases.append(
        {"scores": [float(s) for s in scores], "positives": [bool(p) for p in positives],
         "auc": float(roc_auc_score(positives, scores))}
    )
r = np.random.RandomState(7)
s = np.round(r.rand(50), 1)  # rounded: many ties
p = (r.rand(50) < s).astype(int)
auc_cases.append({"scores": s.tolist(), "positives": [bool(v) for v in p],
                  "auc": float(roc_auc_score(p, s))})

kappa_cases = []
for truth, pred, classes in [
    ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 3),
    ([0, 1, 0, 1, 1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 1, 0, 0, 1, 1], 2),
    ([0, 1, 2, 3, 0, 1, 2, 3, 3, 2], [0, 1, 2, 2, 1, 1, 2, 3, 0, 2], 4),
]:
    kappa_cases.append({"truth": truth, "predicted": pred, "classes": classes,
                        "kappa": float(cohen_kappa_score(truth, pred))})

OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps({
    "generator": f"scripts/classifier_reference.py, scikit-learn {sklearn.__version__}, numpy {np.__version__}",
    "binary": binary,
    "multiclass": multiclass,
    "small_n": small_n,
    "auc_cases": auc_cases,
    "kappa_cases": kappa_cases,
}, separators=(",", ":")) + "\n")
print(f"wrote {OUT}")
