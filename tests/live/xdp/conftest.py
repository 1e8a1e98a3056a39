"""The namespace lab fixture (see xdplab.py)."""

from __future__ import annotations

from xdplab import lab

__all__ = ["lab"]
