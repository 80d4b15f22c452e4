"""Redraws paired_differences.png of a study report from its study.csv (for example a committed one).

    python scripts/plot_study.py docs/study_tissue/study.csv docs/study_tissue/paired_differences.png
"""
from __future__ import annotations

import argparse
import sys

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.evaluation.paired_differences import plot_paired_differences, read_study_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="a study.csv written by the study report")
    parser.add_argument("out_png", help="the PNG to write, e.g. paired_differences.png beside the CSV")
    args = parser.parse_args(argv)
    try:
        plot_paired_differences(read_study_rows(args.csv), args.out_png)
    except CMCLInputError as e:
        print(f"plot_study.py: error: {e}", file=sys.stderr)
        return 2
    print(f"written: {args.out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
