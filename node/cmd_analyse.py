"""``paroma-node analyse``: LV wall thickness of one scan, per AHA segment.

Segments the scan with the shipped model (or the one given), or takes a label
map, and writes ``segmentation.nii.gz``, ``thickness.json`` and
``bullseye.png`` into ``--out``. Bad input ends with one line naming the problem
and exit status 2, and leaves no output files.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.cli import EXIT_OK, print_json


def register(subparsers: Any) -> None:
    """Add ``analyse`` to ``paroma-node``."""
    parser = subparsers.add_parser(
        "analyse", help="measure LV wall thickness of a cardiac CT scan"
    )
    parser.add_argument("scan", type=Path, help="NIfTI file or DICOM series folder")
    parser.add_argument(
        "--labels", type=Path, help="label map in MM-WHS codes (skips segmentation)"
    )
    parser.add_argument(
        "--model", type=Path, help="model weights (.safetensors); default: shipped"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=cmd_analyse)


def cmd_analyse(args: argparse.Namespace) -> int:
    """Run the analysis and print the thickness report as JSON."""
    # Imported here so that other subcommands do not pay for torch and MONAI.
    from ml.analysis import analyse
    from ml.data import load_volume
    from ml.model import load_model

    # Check the scan before loading a model, so bad input fails fast.
    scan = load_volume(args.scan)
    model = None
    if args.labels is None:
        model = load_model(str(args.model) if args.model else None)
    report = analyse(scan, args.labels, model, out_dir=args.out)
    print_json(report.to_json())
    return EXIT_OK
