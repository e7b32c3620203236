#!/usr/bin/env python3
"""The pyRiemann peer of `neurostream bench --tangent-space`: covariance, tangent space and LDA
on each window, one window per call, the way a pyRiemann user scores a live window.

    python3 benches/peer/tangent_peer.py FILTERED.f32 --channels 64 --window 480 --hop 16

FILTERED.f32 is the band-passed signal `neurostream bench` wrote (little-endian float32,
channel-major, channels x samples). Windows end at sample `window`, then every `hop` samples
(what neurostream's windower emits). Fitted before timing on every --train-every-th window,
labelled (index // --label-block) % 2: Covariances(estimator="oas") + TangentSpace(metric=
"riemann") + LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"). Timed per window:
Covariances.transform + TangentSpace.transform + predict_proba.

Prints one JSON object (per-window latency percentiles in microseconds, mean |feature|) for
neurostream to read. Installs pyriemann with pip when it is missing.
"""

import argparse
import json
import platform
import subprocess
import sys
import time


def ensure_pyriemann():
    try:
        import pyriemann  # noqa: F401
        return
    except ImportError:
        pass
    base = [sys.executable, "-m", "pip", "install", "--quiet", "pyriemann"]
    # Debian's Python refuses a plain `pip install` outside a venv (PEP 668).
    for extra in ([], ["--break-system-packages"]):
        if subprocess.run(base + extra, stdout=sys.stderr, stderr=sys.stderr).returncode == 0:
            return
    sys.exit("cannot install pyriemann with pip")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("signal")
    ap.add_argument("--channels", type=int, required=True)
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--hop", type=int, required=True)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--train-every", type=int, default=10)
    ap.add_argument("--label-block", type=int, default=40)
    args = ap.parse_args()

    ensure_pyriemann()
    import numpy as np
    import pyriemann
    import sklearn
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    data = np.fromfile(args.signal, dtype="<f4").reshape(args.channels, -1).astype(np.float64)
    ends = list(range(args.window, data.shape[1] + 1, args.hop))
    windows = [data[:, e - args.window:e] for e in ends]

    train = np.arange(0, len(windows), args.train_every)
    labels = (train // args.label_block) % 2
    cov = Covariances(estimator="oas")
    ts = TangentSpace(metric="riemann")
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    x = np.stack([windows[i] for i in train])
    lda.fit(ts.fit_transform(cov.fit_transform(x)), labels)

    latencies = []
    abs_sum, abs_count = 0.0, 0
    for _ in range(args.passes):
        abs_sum, abs_count = 0.0, 0
        for w in windows:
            start = time.perf_counter()
            v = ts.transform(cov.transform(w[None]))
            lda.predict_proba(v)
            latencies.append(time.perf_counter() - start)
            abs_sum += float(np.abs(v).sum())
            abs_count += v.size

    lat = np.sort(np.array(latencies))
    rank = lambda q: lat[min(len(lat), max(1, int(np.ceil(q * len(lat))))) - 1]
    report = {
        "p50_us": rank(0.50) * 1e6,
        "p99_us": rank(0.99) * 1e6,
        "p999_us": rank(0.999) * 1e6,
        "windows": len(lat),
        "mean_abs_feature": abs_sum / max(1, abs_count),
        "versions": f"Python {platform.python_version()}, numpy {np.__version__}, "
                    f"scikit-learn {sklearn.__version__}, pyriemann {pyriemann.__version__}",
    }
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
