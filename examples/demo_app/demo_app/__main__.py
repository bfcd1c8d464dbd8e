"""Run the demo service: `python -m demo_app --release v1 --host 127.0.0.1 --port 8081`."""

import argparse

from demo_app.app import main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--release", required=True, help="release name or image (demo:v2 -> v2)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slot", default="")
    args = ap.parse_args()
    main(args.release, args.host, args.port, args.slot)
