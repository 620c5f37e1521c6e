"""imgsearch: make a large image collection searchable by visual similarity."""

__version__ = "0.1.0"
