"""CLI: ``python -m ssps_ext.mini_corpus --out DIR --seed 0``."""

import argparse
import json
import time

import dataclasses

from . import PROFILES, build_mini_corpus


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="destination folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--dev_speakers", type=int, default=None, help="override the profile's")
    parser.add_argument("--test_speakers", type=int, default=None, help="override the profile's")
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = PROFILES[args.profile]
    sizes = {"n_dev_speakers": args.dev_speakers, "n_test_speakers": args.test_speakers}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in sizes.items() if v is not None})
    start = time.time()
    stats = build_mini_corpus(args.out, args.seed, cfg, args.num_workers)
    stats["seconds"] = round(time.time() - start, 1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
