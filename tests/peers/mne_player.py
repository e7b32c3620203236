"""MNE-LSL's own player as a peer: streams an EDF with `mne_lsl.player.PlayerLSL`, exactly as
a lab tests with it (samples in volts, the unit declared as MNE-LSL's power of ten "0", and
the annotations on a second, one-hot `annotations` stream). Runs until killed.

    python3 mne_player.py FILE --name N --source-id S
"""
import argparse
import time

import mne
from mne_lsl.player import PlayerLSL

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--name", required=True)
parser.add_argument("--source-id", required=True)
args = parser.parse_args()

raw = mne.io.read_raw_edf(args.file, preload=True, verbose="error")
player = PlayerLSL(raw, chunk_size=16, name=args.name, source_id=args.source_id)
player.start()
print("streaming", flush=True)
while True:
    time.sleep(1)
