"""Entry point of the ingest deployable: the same code as ``phagoflow serve ingest``.

Run as ``python services/ingest/main.py`` (the image runs
``/opt/phagoflow/services/ingest/main.py``); settings from ``PHAGOFLOW_*``, see README.md.
"""

from phagoflow.services import main

if __name__ == "__main__":
    main("ingest")
