"""GPU training on Kubernetes: ``batch/v1`` Job objects, the retraining trigger, submit/watch.

No Kubernetes API server runs on the development and CI machines: the objects are built with the
official ``kubernetes`` client's models, serialised with its own
``ApiClient().sanitize_for_serialization`` and validated offline against the Kubernetes JSON
schema (``kubernetes-validate``); submission and watching are exercised only against a real
cluster.

Modules: :mod:`~phagoflow.k8s.job` (objects), :mod:`~phagoflow.k8s.trigger` (the "N new plates
since the last model" rule, pure), :mod:`~phagoflow.k8s.client` (submit, status, logs) and
:mod:`~phagoflow.k8s.cli` (``phagoflow train-job ...``). Importing this package is cheap.
"""
