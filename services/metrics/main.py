"""Entry point of the metrics deployable: the same code as ``phagoflow serve metrics``.

Run as ``python services/metrics/main.py`` (the image runs
``/opt/phagoflow/services/metrics/main.py``); settings from ``PHAGOFLOW_*``, see README.md.
"""

from phagoflow.services import main

if __name__ == "__main__":
    main("metrics")
