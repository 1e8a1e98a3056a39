from typing import Any

__test__: dict[str, str]


def parse(frame: bytes | bytearray | memoryview, linktype: int = ..., wirelen: int | None = ...) -> tuple[int, dict[str, Any]]: ...
