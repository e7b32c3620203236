"""An independent LSL peer for the integration tests: streams an EDF/EDF+ file with pylsl, in
real time, as an EEG outlet (channel labels and unit in the description, like a vendor app or
MNE-LSL's player) plus a string marker outlet carrying the file's annotations.

Written against pylsl only (the EDF reading is ~40 lines of the published format), so that it
shares no code with neurostream.

    python3 edf_outlet.py FILE [FILE...] --name N --source-id S [--chunk 10] [--channels K]
        [--unit V] [--speed X] [--hold-after K --hold-file PATH] [--wait-for-consumers]

Several files are streamed back to back on one clock (a calibration run, then an online run).
`--speed` pushes faster than real time while time stamps stay those of a real-time recording.
`--hold-after K --hold-file PATH`: after the first K files, wait until PATH exists (the test
creates it when the service says its model is loaded, as a user waits for "go").
"""
import os
import argparse
import struct
import sys
import time

import pylsl


def read_edf(path, max_channels):
    with open(path, "rb") as f:
        raw = f.read()
    header_bytes = int(raw[184:192])
    records = int(raw[236:244])
    record_seconds = float(raw[244:252])
    ns = int(raw[252:256])
    field = lambda offset, width, i: raw[256 + offset * ns + width * i: 256 + offset * ns + width * (i + 1)]
    # Per-signal header fields, in file order, each ns entries wide.
    widths = [16, 80, 8, 8, 8, 8, 8, 80, 8, 32]
    starts = [sum(widths[:k]) for k in range(len(widths))]
    def column(k):
        w = widths[k]
        base = 256 + starts[k] * ns
        return [raw[base + w * i: base + w * (i + 1)].decode("latin-1").strip() for i in range(ns)]
    labels, _, units, pmin, pmax, dmin, dmax, _, counts, _ = [column(k) for k in range(10)]
    counts = [int(c) for c in counts]
    signals = [i for i in range(ns) if labels[i] != "EDF Annotations"][:max_channels]
    annotation = next((i for i in range(ns) if labels[i] == "EDF Annotations"), None)
    rate = counts[signals[0]] / record_seconds
    gain = [(float(pmax[i]) - float(pmin[i])) / (int(dmax[i]) - int(dmin[i])) for i in range(ns)]
    offset = [float(pmin[i]) - gain[i] * int(dmin[i]) for i in range(ns)]
    record_size = sum(counts) * 2
    samples = []
    markers = []
    for r in range(records):
        base = header_bytes + r * record_size
        position = base
        block = {}
        for i in range(ns):
            values = struct.unpack_from("<%dh" % counts[i], raw, position)
            position += counts[i] * 2
            block[i] = values
        for s in range(counts[signals[0]]):
            samples.append([block[i][s] * gain[i] + offset[i] for i in signals])
        if annotation is not None:
            text = struct.pack("<%dh" % counts[annotation], *block[annotation]).decode("latin-1")
            for tal in text.split("\x00"):
                parts = tal.split("\x14")
                if len(parts) < 3:
                    continue
                onset = float(parts[0].split("\x15")[0])
                for label in parts[1:]:
                    if label:
                        markers.append((onset, label))
    return [labels[i].rstrip(".") for i in signals], units[signals[0]], rate, samples, markers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("edf", nargs="+")
    parser.add_argument("--name", required=True)
    parser.add_argument("--source-id", required=True)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--channels", type=int, default=1 << 30)
    parser.add_argument("--unit", default=None, help="send in this unit: V or uV (default: the file's)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--hold-file", default=None)
    parser.add_argument("--wait-for-consumers", action="store_true",
                        help="start streaming once both outlets have a consumer")
    args = parser.parse_args()
    labels, unit, rate, samples, markers, ends = None, None, None, [], [], []
    for path in args.edf:
        file_labels, unit, rate, file_samples, file_markers = read_edf(path, args.channels)
        if labels is not None and file_labels != labels:
            sys.exit("%s has other channels than %s" % (path, args.edf[0]))
        labels = file_labels
        shift = len(samples) / rate
        markers.extend((onset + shift, label) for onset, label in file_markers)
        samples.extend(file_samples)
        ends.append(len(samples))
    hold_at = ends[args.hold_after - 1] if args.hold_after else None
    scale = 1.0
    if args.unit == "V":
        scale, unit = 1e-6, "V"
    info = pylsl.StreamInfo(args.name, "EEG", len(labels), rate, "float32", args.source_id)
    channels = info.desc().append_child("channels")
    for label in labels:
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", "EEG")
    outlet = pylsl.StreamOutlet(info)
    marker_info = pylsl.StreamInfo(args.name + "-markers", "Markers", 1, 0, "string", args.source_id + "-markers")
    marker_outlet = pylsl.StreamOutlet(marker_info)
    print("ready", len(labels), rate, len(samples), flush=True)
    if args.wait_for_consumers:
        # A cue pushed before the consumer's marker inlet is open is never delivered.
        if not (outlet.wait_for_consumers(60) and marker_outlet.wait_for_consumers(60)):
            sys.exit("no consumer within 60 s")
        time.sleep(0.5)
    start = pylsl.local_clock()
    print("start %.9f" % start, flush=True)
    paced_from = (start, 0)
    next_marker = 0
    i = 0
    while i < len(samples):
        if hold_at is not None and i == hold_at:
            while not os.path.exists(args.hold_file):
                time.sleep(0.01)
            # Time stamps carry on as if the stream never paused; the pacing restarts.
            paced_from = (pylsl.local_clock(), i)
        end = min(i + args.chunk, len(samples))
        if hold_at is not None and i < hold_at < end:
            end = hold_at
        due = paced_from[0] + (end - paced_from[1]) / rate / args.speed
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        chunk = [[v * scale for v in frame] for frame in samples[i:end]]
        outlet.push_chunk(chunk, start + (end - 1) / rate)
        while next_marker < len(markers) and markers[next_marker][0] * rate < end:
            onset, label = markers[next_marker]
            marker_outlet.push_sample([label], start + onset)
            next_marker += 1
        i = end
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
