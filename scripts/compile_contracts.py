"""Recompile contracts/src/*.sol with the pinned npm solc into contracts/artifacts.

Usage: .venv/bin/python scripts/compile_contracts.py [--check]

With --check, writes nothing and exits 1 if the committed artifacts differ from
a fresh compile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.build import (
    ARTIFACT_DIR,
    artifact_text,
    compile_sources,
    write_artifacts,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    artifacts = compile_sources()
    if args.check:
        stale = [
            name
            for name, artifact in artifacts.items()
            if not (ARTIFACT_DIR / f"{name}.json").is_file()
            or (ARTIFACT_DIR / f"{name}.json").read_text("utf-8")
            != artifact_text(artifact)
        ]
        for name in stale:
            print(f"stale artifact: contracts/artifacts/{name}.json", file=sys.stderr)
        return 1 if stale else 0
    for path in write_artifacts(artifacts):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
