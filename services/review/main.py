"""Entry point of the review deployable.

With no arguments: the same code as ``phagoflow serve review`` (the plate in the bucket named
by ``PHAGOFLOW_REVIEW_PLATE``, settings from ``PHAGOFLOW_*``). With arguments: ``phagoflow
review ARGS`` on a results folder (what the Helm chart runs, with the results on a volume:
``main.py /results --host 0.0.0.0 --port 8765``). See README.md.
"""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from phagoflow.cli import main as cli

        sys.exit(cli(["review", *sys.argv[1:]]))
    from phagoflow.services import main

    main("review")
