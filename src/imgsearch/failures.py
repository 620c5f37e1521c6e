"""Why a file was not embedded: one table of reasons, used by every engine and by the listing.

The message is what a dataset row's `error` holds and what users read; code passes the Reason itself around, so no
decision depends on the wording of a message.
"""

from __future__ import annotations

from enum import Enum


class Reason(Enum):
    DISAPPEARED = "file disappeared before it could be read"
    PERMISSION = "cannot read file: permission denied"
    IS_DIRECTORY = "is a directory, not a file"
    READ_ERROR = "cannot read file: {detail}"
    TOO_LARGE = "file larger than {limit:,} bytes"
    CANNOT_STAT = "cannot stat: {detail}"
    CANNOT_LIST = "cannot list folder: {detail}"
    DECODE = "{detail}"  # imaging.DecodeError's own one-line message (truncated, not an image, too many pixels...)
    EMBED = "embedding failed: {detail}"
    HADOOP_HIDDEN = "not read by Spark: Hadoop hides names that start with '_' or '.' (use the local engine, or rename)"
    NOT_READ_REMOTE = "not read by Spark: missing, unreadable or Hadoop-hidden ('_' or '.' name)"
    NOT_READ = "not read by Spark (unreadable file)"

    def message(self, **detail) -> str:
        return self.value.format(**detail)
