#!/usr/bin/env python3
"""Fuzz the rules reader: arbitrary text through ``fastvs.control.rules.parse_rules``.

Only ``RulesError`` may come out. When the text parses, the rules must survive
``format_rules`` -> ``parse_rules`` unchanged, and building a ``Director`` from them
may only refuse them with ``RulesError`` (e.g. a scheduler not implemented yet).

Run: ``python fuzz/fuzz_rules.py [corpus dir] -max_total_time=60`` (atheris flags).
"""

from __future__ import annotations

import sys
import warnings


def test_one_input(data: bytes) -> None:
    from fastvs.control.rules import format_rules, parse_rules
    from fastvs.errors import RulesError

    text = data.decode("utf-8", "replace")
    order = "file" if data[:1] == b"#" else "kernel"
    try:
        rules = parse_rules(text, source="<fuzz>", order=order)
    except RulesError:
        return
    again = parse_rules(format_rules(rules), source="<fuzz:saved>", order=order)
    if format_rules(again) != format_rules(rules):
        raise AssertionError("format_rules -> parse_rules is not stable")
    from fastvs.control.director import Director

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Director(rules, capacity=16, seed=1)
    except RulesError:
        pass


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import fastvs.control.rules  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
