#!/usr/bin/env python3
"""The Python peer of `neurostream bench`: the same workload, written the way a careful
NumPy/SciPy/scikit-learn user would write it, on the same recording and the same chunks.

    python3 benches/peer/peer.py S001R04.edf [--chunk 16] [--passes 3]

Workload (what `src/cli/bench.rs` runs):
  - scipy.signal.sosfilt with carried state (zi) on each chunk, all channels at once:
    order-4 Butterworth high-pass 1 Hz, order-4 Butterworth low-pass 40 Hz, iirnotch 60 Hz Q 30;
  - a 1 s window every 0.1 s from a ring of the last second, scipy.signal.welch
    (Hann, 0.5 s segments, 50 % overlap, constant detrend, density), band sum over
    mu 8-12 Hz and beta 13-30 Hz times fs / nperseg, natural log;
  - StandardScaler + SVC(kernel='rbf', C=1, gamma='scale', probability=True), fitted before
    timing on every --train-every-th window labelled (index // --label-block) % 2.

Prints one JSON object (channel-samples per second per stage and overall, per-window latency
percentiles in microseconds) for `neurostream bench --peer` to read. Needs numpy, scipy and
scikit-learn; reads EDF/EDF+ itself (16-bit signals; annotation signals are skipped).
"""

import argparse
import json
import platform
import sys
import time
import warnings

import numpy as np
import scipy
import scipy.signal as signal
import sklearn
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

BANDS = [(8.0, 12.0), (13.0, 30.0)]


def read_edf(path):
    """Signals of an EDF/EDF+ file in physical units, channels x samples (float32), and the
    sampling rate. All non-annotation signals must share one rate (true of EEGMMIDB)."""
    raw = open(path, "rb").read()
    field = lambda a, b: raw[a:b].decode("ascii").strip()
    header_bytes = int(field(184, 192))
    records = int(field(236, 244))
    duration = float(field(244, 252))
    ns = int(field(252, 256))
    pos = 256

    def column(width):
        nonlocal pos
        out = [raw[pos + i * width:pos + (i + 1) * width].decode("ascii").strip() for i in range(ns)]
        pos += ns * width
        return out

    labels = column(16)
    column(80)  # transducer
    column(8)  # physical dimension
    pmin = np.array(column(8), dtype=float)
    pmax = np.array(column(8), dtype=float)
    dmin = np.array(column(8), dtype=float)
    dmax = np.array(column(8), dtype=float)
    column(80)  # prefiltering
    per_record = np.array(column(8), dtype=int)
    data = np.frombuffer(raw, dtype="<i2", offset=header_bytes,
                         count=records * int(per_record.sum())).reshape(records, -1)
    keep = [i for i, label in enumerate(labels) if label != "EDF Annotations"]
    offsets = np.concatenate([[0], np.cumsum(per_record)])
    n = per_record[keep[0]]
    assert all(per_record[i] == n for i in keep), "signals at different rates"
    out = np.empty((len(keep), records * n), dtype=np.float32)
    for row, i in enumerate(keep):
        digital = data[:, offsets[i]:offsets[i + 1]].reshape(-1).astype(np.float64)
        gain = (pmax[i] - pmin[i]) / (dmax[i] - dmin[i])
        out[row] = (digital - dmin[i]) * gain + pmin[i]
    return out, n / duration


class Peer:
    """The streaming pipeline: filter state, ring buffer, hop counter."""

    def __init__(self, channels, fs):
        hp = signal.butter(4, 1.0, btype="highpass", fs=fs, output="sos")
        lp = signal.butter(4, 40.0, btype="lowpass", fs=fs, output="sos")
        b, a = signal.iirnotch(60.0, 30.0, fs=fs)
        self.sos = np.vstack([hp, lp, signal.tf2sos(b, a)])
        self.zi = np.zeros((self.sos.shape[0], channels, 2))
        self.fs = fs
        self.window = int(round(1.0 * fs))
        self.hop = max(1, int(round(0.1 * fs)))
        self.nperseg = int(round(0.5 * fs))
        self.noverlap = int(round(0.5 * self.nperseg))
        self.ring = np.zeros((channels, self.window), dtype=np.float32)
        self.filled = 0
        self.until_next = self.window
        freqs = np.fft.rfftfreq(self.nperseg, 1.0 / fs)
        self.masks = [(freqs >= lo) & (freqs <= hi) for lo, hi in BANDS]

    def filter(self, chunk):
        y, self.zi = signal.sosfilt(self.sos, chunk, axis=-1, zi=self.zi)
        return y

    def windows(self, y):
        """Push filtered samples; yield the band-power features of each completed window."""
        start, n = 0, y.shape[1]
        while start < n:
            span = min(n - start, self.until_next)
            self.ring = np.roll(self.ring, -span, axis=1)
            self.ring[:, -span:] = y[:, start:start + span]
            start += span
            self.until_next -= span
            if self.until_next == 0:
                self.until_next = self.hop
                yield self.band_power(self.ring)

    def band_power(self, window):
        _, psd = signal.welch(window, self.fs, window="hann", nperseg=self.nperseg,
                              noverlap=self.noverlap, detrend="constant", scaling="density",
                              axis=-1)
        scale = self.fs / self.nperseg
        power = np.stack([psd[:, m].sum(axis=1) * scale for m in self.masks], axis=1)
        return np.log(np.maximum(power, np.finfo(np.float64).tiny)).reshape(1, -1)


def chunks_of(data, size):
    return [np.ascontiguousarray(data[:, s:s + size]) for s in range(0, data.shape[1], size)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--train-every", type=int, default=10)
    ap.add_argument("--label-block", type=int, default=40)
    args = ap.parse_args()

    data, fs = read_edf(args.recording)
    channels = data.shape[0]
    chunks = chunks_of(data, args.chunk)
    channel_samples = data.size

    # Untimed: every window's features, to fit the SVC and to time it alone.
    peer = Peer(channels, fs)
    features = [f for c in chunks for f in peer.windows(peer.filter(c))]
    features = np.vstack(features)
    train = np.arange(0, len(features), args.train_every)
    labels = (train // args.label_block) % 2
    # scikit-learn 1.9 deprecates probability=True in favour of CalibratedClassifierCV; it is
    # still libsvm's Platt scaling, the calibration our SVM implements, so keep it and stay quiet.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale",
                                                probability=True, random_state=0))
    model.fit(features[train], labels)

    best = [float("inf")] * 4
    latencies = []
    for _ in range(args.passes):
        peer = Peer(channels, fs)
        start = time.perf_counter()
        filtered = [peer.filter(c) for c in chunks]
        best[0] = min(best[0], time.perf_counter() - start)

        start = time.perf_counter()
        for y in filtered:
            for _f in peer.windows(y):
                pass
        best[1] = min(best[1], time.perf_counter() - start)

        start = time.perf_counter()
        for row in features:
            model.predict_proba(row.reshape(1, -1))
        best[2] = min(best[2], (time.perf_counter() - start) / len(features))

        peer = Peer(channels, fs)
        total = 0.0
        for c in chunks:
            start = time.perf_counter()
            emitted = False
            for f in peer.windows(peer.filter(c)):
                model.predict_proba(f)
                emitted = True
            dt = time.perf_counter() - start
            total += dt
            if emitted:
                latencies.append(dt)
        best[3] = min(best[3], total)

    lat = np.sort(np.array(latencies))
    rank = lambda q: lat[min(len(lat), max(1, int(np.ceil(q * len(lat))))) - 1]
    report = {
        "preprocess": channel_samples / best[0],
        "window_band_power": channel_samples / best[1],
        "svm_us": best[2] * 1e6,
        "pipeline": channel_samples / best[3],
        "p50_us": rank(0.50) * 1e6,
        "p99_us": rank(0.99) * 1e6,
        "p999_us": rank(0.999) * 1e6,
        "windows": len(lat),
        "support_vectors": int(model[-1].support_vectors_.shape[0]),
        "feature_mean": float(features.mean()),
        "versions": f"Python {platform.python_version()}, numpy {np.__version__}, "
                    f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}",
    }
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
