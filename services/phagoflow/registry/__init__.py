"""Model registry: U-Net versions in the object store, a promotion gate, promotion and rollback.

Layout (one bucket, Triton's model-repository layout so Triton can serve
``s3://<bucket>/models`` directly)::

    models/autophagy_unet/config.pbtxt      Triton config; version_policy pins the serving version
    models/autophagy_unet/<N>/model.onnx    version N (1, 2, ...): what Triton loads
    models/autophagy_unet/<N>/model.pt      the same weights for torch (ignored by Triton)
    models/autophagy_unet/<N>/card.json     the model card (normalisation, checksums, training)
    models/autophagy_unet/registry.json     versions, the serving version, promotion history

Triton needs numeric version folders, so the registry numbers versions 1, 2, ...; the card's
own version string (``sha-...``) is recorded next to it. Promotion rewrites ``config.pbtxt``
(``version_policy { specific { versions: [N] } }``); Triton in ``--model-control-mode=poll``
picks the change up at its next poll, or is told through its load API.

Modules: :mod:`~phagoflow.registry.store` (``ModelRegistry``), :mod:`~phagoflow.registry.gate`
(the promotion gate), :mod:`~phagoflow.registry.triton` (config pinning) and
:mod:`~phagoflow.registry.cli` (``phagoflow model ...``). This package imports nothing heavy, so
the command line stays fast.
"""

__all__ = ["DEFAULT_MODEL", "DEFAULT_PREFIX"]

#: Triton model name = folder of the model in the repository.
DEFAULT_MODEL = "autophagy_unet"
#: Repository root inside the bucket.
DEFAULT_PREFIX = "models"
