"""Entry point of the cip deployable: the same code as ``phagoflow serve cip``.

Run as ``python services/cip/main.py`` (the image runs
``/opt/phagoflow/services/cip/main.py``); settings from ``PHAGOFLOW_*``, see README.md.
"""

from phagoflow.services import main

if __name__ == "__main__":
    main("cip")
