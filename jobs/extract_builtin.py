"""`python -m jobs.extract_builtin`: a `labeler recipe` run -> the built-in model's shipped parts.

The last step of `scripts/build_builtin.sh`; the work is `labeler.builtin.extract.extract` (see its
docstring for what is kept and checked). Exit status 0, or 2 with one line for a run it cannot use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from labeler.builtin.extract import extract  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m jobs.extract_builtin", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the `labeler recipe` output folder")
    parser.add_argument("--output", required=True, help="the parts folder (labeler/builtin/parts)")
    parser.add_argument("--command", required=True, help="the rebuild command, recorded in the provenance")
    parser.add_argument("--commit", required=True, help="the git commit the run was made at")
    args = parser.parse_args(argv)
    try:
        manifest = extract(args.run, args.output, args.command, args.commit)
    except (ValueError, OSError) as exc:
        print(f"extract_builtin: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    size = sum((Path(args.output) / n).stat().st_size for n in manifest["parts"])
    print(f"extract_builtin: {len(manifest['parts'])} parts ({size / 1e6:.1f} MB), {len(manifest['wheel_tensors'])} "
          f"tensors from the wheels, model_version {manifest['model_version']} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
