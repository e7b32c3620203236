"""MNE-LSL's own consumer as a peer: `mne_lsl.stream.StreamLSL` connects to a stream by name,
the way a lab reads a headset with MNE-LSL, and prints one JSON line with what MNE made of
it: channel names, types and units (MNE's unit and unit multiplier per channel), sampling
rate, and the samples of a few seconds (channels × samples, as `get_data` returns them).

    python3 mne_stream.py NAME SECONDS
"""
import json
import sys
import time

from mne_lsl.stream import StreamLSL


def main():
    name, seconds = sys.argv[1], float(sys.argv[2])
    stream = StreamLSL(bufsize=seconds + 1.0, name=name)
    stream.connect(acquisition_delay=0.05, timeout=10.0)
    deadline = time.monotonic() + seconds + 20.0
    # Wait until the buffer holds `seconds` of new samples.
    while stream.n_new_samples < int(seconds * stream.info["sfreq"]):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no data"}), flush=True)
            return 1
        time.sleep(0.05)
    data, stamps = stream.get_data(winsize=seconds)
    info = stream.info
    print(json.dumps({
        "ch_names": info["ch_names"],
        "ch_types": stream.get_channel_types(),
        "units": [[int(ch["unit"]), int(ch["unit_mul"])] for ch in info["chs"]],
        "sfreq": info["sfreq"],
        "data": data.tolist(),
        "span": float(stamps[-1] - stamps[0]),
    }), flush=True)
    stream.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
