"""The library's errors: one base class, :class:`RecsysEmbError`, that every error the library raises on
purpose derives from, so a pipeline can catch ``recsys_emb.RecsysEmbError`` and nothing else.

Each error also derives from the built-in exception it refines (``ValueError``, ``FileNotFoundError``),
so code written against the built-in keeps working. Messages name the file or feature, the value and
the fix.
"""

from __future__ import annotations

__all__ = [
    "RecsysEmbError",
    "SpecError",
    "UnknownVariantError",
    "ConfigError",
    "InvalidInputError",
    "BadLineError",
    "DataError",
    "CheckpointError",
    "OutputDirError",
    "WriteError",
    "TorchStackError",
]


class RecsysEmbError(Exception):
    """Base of every error the library raises on purpose."""


class SpecError(RecsysEmbError, ValueError):
    """A feature or embedding spec that is not valid (names the feature, the field and what is allowed)."""


class UnknownVariantError(SpecError):
    """An embedding ``type`` no registered variant has (a custom variant's module not imported yet)."""


class ConfigError(RecsysEmbError, ValueError):
    """A configuration key or value that is not allowed (names the file, the key, the value and the fix)."""


class InvalidInputError(RecsysEmbError, ValueError):
    """Input ids or a KeyedJaggedTensor that the layer cannot embed correctly."""


class BadLineError(RecsysEmbError, ValueError):
    """A malformed input line under ``on_bad_line="error"``; names the file, line and reason."""


class DataError(RecsysEmbError, FileNotFoundError):
    """A dataset directory or input file that is missing or does not match what it declares."""


class CheckpointError(RecsysEmbError, ValueError):
    """A checkpoint or model directory that cannot be loaded as asked (names the file and the reason)."""


class OutputDirError(RecsysEmbError, FileExistsError):
    """An output directory that is in use by another process, or holds earlier results that this run
    would mix with or overwrite (names the directory, what is there and the fix)."""


class WriteError(RecsysEmbError, OSError):
    """An output that could not be written: a full disk or file size limit, a read-only or unwritable
    location (names the destination, the reason and what was left there: nothing)."""


class TorchStackError(RecsysEmbError, ImportError):
    """torch, FBGEMM or TorchRec missing, failing to load, or in versions that do not load together; raised
    where TorchRec is first needed (:func:`recsys_emb.torch_stack.require_torch_stack`; names what is
    wrong, the versions found and the install commands)."""
