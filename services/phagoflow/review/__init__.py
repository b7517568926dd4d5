"""Review-and-correct web app and blind expert rating for an embedded results folder.

``phagoflow review RESULTS`` serves :func:`~phagoflow.review.app.create_app` with uvicorn: a plate
heat-map (counts and CIP-vs-CDL disagreement), the fields of a well sorted by disagreement, a field
viewer with mask overlays and correction tools, curated masks saved with provenance under
``RESULTS/curated/``, and blinded pairwise rating sessions stored under ``RESULTS/ratings/``.
``phagoflow rating report RESULTS`` summarises the ratings (:func:`~phagoflow.review.rating.
write_rating_report`), ``phagoflow curation report RESULTS`` the correction time
(:mod:`phagoflow.review.curation`).

The app works on the :class:`~phagoflow.review.results.ReviewResults` protocol: a results folder
(:class:`~phagoflow.review.results.ResultsFolder`) or one plate of the streaming stack's object
store (:class:`~phagoflow.review.store.StoreResults`, ``phagoflow serve review`` and
``phagoflow review --s3 PLATE``; curated masks go to ``curated/<plate>/`` in the bucket).

Every write needs the bearer token of :class:`~phagoflow.review.settings.ReviewSettings`; every
field name in a request is checked against the plate catalogue before any path is built.
"""

from __future__ import annotations

from phagoflow.review.settings import ReviewSettings

__all__ = ["ReviewSettings"]
