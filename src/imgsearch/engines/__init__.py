"""Engines schedule the shared core (imgsearch.core) over a collection: `local` (threads on one machine), `spark`."""

ENGINES = ("local", "spark")
