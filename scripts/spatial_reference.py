#!/usr/bin/env python3
"""Reference values for the spatial feature extractors (tests/spatial.rs).

Writes tests/fixtures/spatial_reference.json from a small seeded synthetic two-class dataset
(8 channels x 200 samples, 20 epochs) using the libraries our results are compared with:

- scikit-learn `oas` (per-epoch OAS covariance, as pyRiemann `Covariances(estimator='oas')`),
- pyRiemann `mean_riemann`, `TangentSpace(metric='riemann')`, `distance_riemann`, `logm`,
  `powm`, `geodesic_riemann`,
- MNE `CSP(n_components=4, reg='oas', log=True, cov_est='concat')` log-power features.

The epochs are small integers so they are exact in f32 (what the Rust side reads) and short in
JSON. Run:  pip install numpy scipy scikit-learn pyriemann mne && python3 scripts/spatial_reference.py
"""

import json
import os

import numpy as np
import mne
import pyriemann
import sklearn
from mne.decoding import CSP
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from pyriemann.utils.distance import distance_riemann
from pyriemann.utils.base import logm, powm
from pyriemann.utils.geodesic import geodesic_riemann
from pyriemann.utils.mean import mean_riemann
from sklearn.covariance import oas

N_CH, N_T, N_EPOCHS = 8, 200, 20
rng = np.random.default_rng(20240611)

# Two classes share a random mixing of 8 sources; class 0 attenuates sources 0-1 and boosts
# source 2, class 1 the reverse, so the spatial covariances differ in a few directions.
mixing = rng.normal(size=(N_CH, N_CH))
epochs, labels = [], []
for i in range(N_EPOCHS):
    y = i % 2
    gains = np.ones(N_CH)
    if y == 0:
        gains[[0, 1]] = 0.4
        gains[2] = 2.0
    else:
        gains[[0, 1]] = 2.0
        gains[2] = 0.4
    sources = rng.normal(size=(N_CH, N_T)) * gains[:, None]
    x = mixing @ sources + 0.3 * rng.normal(size=(N_CH, N_T))
    # Integers (microvolt-like quantisation): exact in f32 and compact in JSON.
    epochs.append(np.round(20.0 * x))
    labels.append(y)
X = np.array(epochs, dtype=np.float64)
y = np.array(labels)

# OAS covariance per epoch, sklearn directly and through pyRiemann (must agree).
covs = np.array([oas(e.T)[0] for e in X])
covs_pyr = Covariances(estimator="oas").fit_transform(X)
assert np.allclose(covs, covs_pyr, rtol=1e-12, atol=0), "pyRiemann OAS != sklearn OAS"
shrinkages = [float(oas(e.T)[1]) for e in X]

mean = mean_riemann(covs)  # tol=1e-8, maxiter=50 (pyRiemann defaults)
ts = TangentSpace(metric="riemann").fit(covs)
assert np.allclose(ts.reference_, mean)
tangent = ts.transform(covs)

csp = CSP(n_components=4, reg="oas", log=True, cov_est="concat")
csp.fit(X, y)
csp_features = csp.transform(X)

out = {
    "versions": {
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "pyriemann": pyriemann.__version__,
        "mne": mne.__version__,
    },
    "channels": N_CH,
    "samples": N_T,
    "labels": y.tolist(),
    "epochs": X.astype(int).tolist(),
    "oas_covariances": covs.tolist(),
    "oas_shrinkages": shrinkages,
    "riemann_mean": mean.tolist(),
    "tangent_vectors": tangent.tolist(),
    "distance_cov0_mean": float(distance_riemann(covs[0], mean)),
    "logm_cov0": logm(covs[0]).tolist(),
    "powm_cov0_0_3": powm(covs[0], 0.3).tolist(),
    "geodesic_mean_cov0_0_25": geodesic_riemann(mean, covs[0], 0.25).tolist(),
    "csp_features": csp_features.tolist(),
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "spatial_reference.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")
