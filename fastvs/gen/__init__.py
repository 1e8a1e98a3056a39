"""Synthetic traffic: captures of many flows against a rule set (``fastvs gen``)."""

from fastvs.gen.traffic import generate

__all__ = ["generate"]
