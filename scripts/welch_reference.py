#!/usr/bin/env python3
"""Generate tests/fixtures/welch_reference.json: scipy Welch band powers of real EEG windows.

The Rust test (tests/dsp.rs) feeds the same raw samples through `BandPower` and requires
agreement within 1e-3 relative. The raw input samples are stored in the JSON so the Rust side
needs no EDF reader.

Input: S001R04.edf from $NEUROSTREAM_DATA/eegmmidb/S001/ (falls back to
../shared/data/eeg next to the checkout, as tests/common/mod.rs does). Needs numpy + scipy.

Usage: python3 scripts/welch_reference.py  (run from the repository root)
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.signal

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "welch_reference.json"

FILE = "eegmmidb/S001/S001R04.edf"
CHANNELS = ["C3", "Cz", "C4", "Oz"]
STARTS_SECONDS = [10.0, 33.3, 77.0]
WINDOW_SECONDS = 1.0
SEGMENT_SECONDS = 0.5
OVERLAP = 0.5
BANDS = [("mu", 8.0, 12.0), ("beta", 13.0, 30.0)]


def data_dir() -> Path:
    env = os.environ.get("NEUROSTREAM_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "eeg"


def read_edf(path: Path):
    """Minimal EDF(+) reader: returns (labels, rates, signals as float64 physical values).

    Header: 256 fixed bytes, then 256 bytes per signal, stored field by field (all labels,
    then all transducer types, ...). Data: records, each holding every signal's samples in
    turn as 16-bit little-endian integers.
    """
    raw = path.read_bytes()
    ns = int(raw[252:256].decode("ascii").strip())
    n_records = int(raw[236:244].decode("ascii").strip())
    record_seconds = float(raw[244:252].decode("ascii").strip())
    pos = 256

    def field(width):
        nonlocal pos
        vals = [
            raw[pos + i * width : pos + (i + 1) * width].decode("latin-1").strip()
            for i in range(ns)
        ]
        pos += ns * width
        return vals

    labels = field(16)
    field(80)  # transducer type
    field(8)  # physical dimension
    pmin = np.array([float(v) for v in field(8)])
    pmax = np.array([float(v) for v in field(8)])
    dmin = np.array([float(v) for v in field(8)])
    dmax = np.array([float(v) for v in field(8)])
    field(80)  # prefiltering
    nsamp = [int(v) for v in field(8)]
    field(32)  # reserved
    header_bytes = 256 + 256 * ns
    assert pos == header_bytes, (pos, header_bytes)

    record_len = sum(nsamp)
    data = np.frombuffer(raw, dtype="<i2", offset=header_bytes, count=n_records * record_len)
    data = data.reshape(n_records, record_len)
    signals = {}
    offset = 0
    for i, label in enumerate(labels):
        n = nsamp[i]
        if label != "EDF Annotations":
            digital = data[:, offset : offset + n].reshape(-1).astype(np.float64)
            scale = (pmax[i] - pmin[i]) / (dmax[i] - dmin[i])
            signals[label.rstrip(".")] = ((digital - dmin[i]) * scale + pmin[i], n / record_seconds)
        offset += n
    return signals


def band_powers(x, fs, nperseg=None):
    """Welch band powers; `nperseg=len(x)` gives the "periodogram" method (one Hann segment)."""
    if nperseg is None:
        nperseg = int(round(SEGMENT_SECONDS * fs))
        noverlap = int(round(OVERLAP * nperseg))
    else:
        noverlap = 0
    f, pxx = scipy.signal.welch(
        x,
        fs=fs,
        window="hann",
        nperseg=nperseg,
        noverlap=noverlap,
        detrend="constant",
        scaling="density",
        return_onesided=True,
        average="mean",
    )
    df = fs / nperseg
    out = {}
    for name, lo, hi in BANDS:
        mask = (f >= lo) & (f <= hi)
        assert mask.any()
        out[name] = float(pxx[mask].sum() * df)
    return out, nperseg, noverlap


def main():
    path = data_dir() / FILE
    if not path.is_file():
        sys.exit(f"{path} not found (set NEUROSTREAM_DATA to the folder holding eegmmidb/)")
    signals = read_edf(path)
    cases = []
    settings = None
    for start_s in STARTS_SECONDS:
        for label in CHANNELS:
            x_full, fs = signals[label]
            start = int(round(start_s * fs))
            n = int(round(WINDOW_SECONDS * fs))
            # Round-trip through float32: the Rust side sees f32 samples, so scipy must too.
            x = x_full[start : start + n].astype(np.float32).astype(np.float64)
            powers, nperseg, noverlap = band_powers(x, fs)
            periodogram, _, _ = band_powers(x, fs, nperseg=len(x))
            settings = {"rate": fs, "nperseg": nperseg, "noverlap": noverlap}
            cases.append(
                {
                    "file": FILE,
                    "channel": label,
                    "start_sample": start,
                    "powers": powers,
                    "periodogram_powers": periodogram,
                    "samples": [float(v) for v in x],
                }
            )
    doc = {
        "generator": "scripts/welch_reference.py",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "definition": "scipy.signal.welch(x, fs, window='hann', nperseg, noverlap, detrend='constant', "
        "scaling='density', return_onesided=True, average='mean'); band power = sum of PSD bins "
        "with low <= f <= high times fs/nperseg (linear, not log). periodogram_powers: the same with "
        "nperseg = window length (one Hann segment)",
        "segment_seconds": SEGMENT_SECONDS,
        "overlap": OVERLAP,
        "bands": [{"name": n, "low": lo, "high": hi} for n, lo, hi in BANDS],
        **settings,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # Compact samples (one case per line) keep the fixture small and diffable.
    with OUT.open("w") as fh:
        head = {k: v for k, v in doc.items() if k != "cases"}
        body = json.dumps(head, indent=2)[:-2]
        fh.write(body + ',\n  "cases": [\n')
        fh.write(",\n".join("    " + json.dumps(c) for c in cases))
        fh.write("\n  ]\n}\n")
    json.loads(OUT.read_text())  # sanity: valid JSON
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
