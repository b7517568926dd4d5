"""Entry point of the trainer deployable: train a U-Net, then push and promote it.

``python services/trainer/main.py EXPORT... [TRAIN FLAGS]`` runs what the training Job runs
(:func:`phagoflow.k8s.job.training_command`, the chart's ``training.yaml``)::

    phagoflow train EXPORT... --out /work/model --device cuda [TRAIN FLAGS]
    phagoflow model push /work/model --source $JOB_NAME --promote --triton-config CONFIG

``PHAGOFLOW_TRAIN_OUT`` (default ``/work/model``), ``PHAGOFLOW_TRAIN_DEVICE`` (``cuda``),
``PHAGOFLOW_TRITON_CONFIG`` (``/etc/phagoflow/triton/config.pbtxt``) and
``PHAGOFLOW_TRAIN_HELDOUT_PLATES`` (space-separated plates for the promotion gate) change the
defaults. The model is pushed only when training succeeded. See README.md.
"""

import os
import sys

if __name__ == "__main__":
    from phagoflow.cli import main as cli

    out = os.environ.get("PHAGOFLOW_TRAIN_OUT", "/work/model")
    device = os.environ.get("PHAGOFLOW_TRAIN_DEVICE", "cuda")
    status = cli(["train", *sys.argv[1:], "--out", out, "--device", device])
    if status == 0:
        push = ["model", "push", out, "--source", os.environ.get("JOB_NAME", "trainer")]
        push += ["--promote", "--triton-config"]
        push += [os.environ.get("PHAGOFLOW_TRITON_CONFIG", "/etc/phagoflow/triton/config.pbtxt")]
        heldout = os.environ.get("PHAGOFLOW_TRAIN_HELDOUT_PLATES", "").split()
        if heldout:
            push += ["--plates", *heldout]
        status = cli(push)
    sys.exit(status)
