"""``python -m ztid`` runs the ``ztid`` command."""

from ztid.cli import _entry

_entry()
