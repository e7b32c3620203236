#!/usr/bin/env python3
"""Print the commands of a running neurostream service (docs/protocol.md), one JSON per line.

    pip install websockets
    python3 examples/listen.py ws://127.0.0.1:8765/ws [--token T] [--feedback]

With --feedback, every command is confirmed as correct (a `feedback` with its class), which
trains a plastic (MLP) decoder online; the `learned` replies are printed too.
"""

import argparse
import asyncio
import json
import sys

try:
    import websockets
except ImportError:
    sys.exit("this example needs the websockets package: pip install websockets")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/ws")
    parser.add_argument("--token", help="bearer token, when the service requires one")
    parser.add_argument("--feedback", action="store_true", help="confirm every command")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with websockets.connect(args.url, additional_headers=headers) as ws:
        async for text in ws:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "hello":
                if message.get("protocol") != 1:
                    sys.exit(f"unsupported protocol version {message.get('protocol')}")
                print(f"connected: classes {message['classes']}", file=sys.stderr)
            elif kind == "command":
                print(json.dumps(message), flush=True)
                if args.feedback:
                    await ws.send(json.dumps(
                        {"type": "feedback", "class": message["class"], "seq": message["seq"]}))
            elif kind in ("status", "error", "learned"):
                print(text, file=sys.stderr)
            # Other types (and fields) are ignored, as the protocol asks.


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
