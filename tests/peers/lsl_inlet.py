"""An independent LSL consumer for the integration tests: resolves a stream by name with pylsl,
pulls samples (and markers of NAME-markers, if present) and prints one JSON summary line.

    python3 lsl_inlet.py NAME SAMPLES
"""
import json
import sys

import pylsl


def main():
    name, wanted = sys.argv[1], int(sys.argv[2])
    found = pylsl.resolve_byprop("name", name, 1, 10.0)
    if not found:
        print(json.dumps({"error": "not found"}), flush=True)
        return 1
    inlet = pylsl.StreamInlet(found[0])
    info = inlet.info(5.0)
    labels = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        ch = ch.next_sibling("channel")
    markers = pylsl.resolve_byprop("name", name + "-markers", 1, 2.0)
    marker_inlet = pylsl.StreamInlet(markers[0]) if markers else None
    stamps = []
    first = None
    while len(stamps) < wanted:
        sample, stamp = inlet.pull_sample(timeout=5.0)
        if sample is None:
            break
        if first is None:
            first = sample
        stamps.append(stamp)
    labels_seen = []
    if marker_inlet is not None:
        while True:
            sample, stamp = marker_inlet.pull_sample(timeout=0.5)
            if sample is None:
                break
            labels_seen.append(sample[0])
    print(json.dumps({
        "channel_count": info.channel_count(),
        "rate": info.nominal_srate(),
        "labels": labels,
        "samples": len(stamps),
        "first": first,
        "span": stamps[-1] - stamps[0] if stamps else 0.0,
        "markers": labels_seen,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
