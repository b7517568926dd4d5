"""Entry point of the inference deployable: the same code as ``phagoflow serve inference``.

Run as ``python services/inference/main.py`` (the image runs
``/opt/phagoflow/services/inference/main.py``); settings from ``PHAGOFLOW_*``, see README.md.
"""

from phagoflow.services import main

if __name__ == "__main__":
    main("inference")
