"""Throughput measurement: ``fastvs bench`` and the references it is compared with."""
