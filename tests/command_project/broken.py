"""Scripts that go wrong in the three ways a command can: it fails, it writes nothing, it hangs."""

import argparse
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("how", choices=("fails", "writes-nothing", "hangs"))
parser.add_argument("--out", required=True)
args = parser.parse_args()
if args.how == "fails":
    print("loading data from /data/train.csv", file=sys.stderr)
    raise SystemExit("FileNotFoundError: /data/train.csv")
if args.how == "hangs":
    print("waiting for a lock that never comes", file=sys.stderr, flush=True)
    time.sleep(3600)
print("trained, but saved nothing")
