"""Engines schedule the shared core (imgsearch.core) over a collection. A small registry, chosen by name.

`local` (threads on this machine) and `spark` are built in; another engine is one module with an `Engine` subclass
and a `register_engine(name, factory)` call. The Spark engine is imported only when it is asked for, so nothing
else ever imports pyspark.
"""

from __future__ import annotations

from typing import Callable

from imgsearch.config import Settings
from imgsearch.engines.base import DATASET_COLUMNS, Engine, EngineOptions
from imgsearch.errors import ImgSearchError

EngineFactory = Callable[[EngineOptions, Settings], Engine]
_ENGINES: dict[str, EngineFactory] = {}


def register_engine(name: str, factory: EngineFactory) -> None:
    _ENGINES[name] = factory


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def create_engine(name: str, settings: Settings, options: EngineOptions | None = None) -> Engine:
    """A new engine by name, to be used as a context manager."""
    try:
        factory = _ENGINES[name]
    except KeyError:
        raise ImgSearchError(f"unknown engine {name!r}: use {' or '.join(engine_names())}") from None
    return factory(options or EngineOptions(), settings)


def engine_for(uri: str, preferred: str, settings: Settings, options: EngineOptions | None = None) -> Engine:
    """The preferred engine if it can read `uri`, else the first registered one that can (a dataset on HDFS is
    streamed by Spark even when the command did not name an engine)."""
    engine = create_engine(preferred, settings, options)
    if engine.can_read(uri):
        return engine
    for name in engine_names():
        if name != preferred:
            other = create_engine(name, settings, options)
            if other.can_read(uri):
                return other
    return engine  # its own error, when used, says what it cannot read


def _spark(options: EngineOptions, settings: Settings) -> Engine:
    from imgsearch.engines.spark import SparkEngine

    return SparkEngine(options, settings)


def _local(options: EngineOptions, settings: Settings) -> Engine:
    from imgsearch.engines.local import LocalEngine

    return LocalEngine(options, settings)


register_engine("local", _local)
register_engine("spark", _spark)

__all__ = ["DATASET_COLUMNS", "Engine", "EngineOptions", "create_engine", "engine_for", "engine_names",
           "register_engine"]
