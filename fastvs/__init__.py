"""fastvs: the Linux LVS/IPVS director's data path in user space."""

from fastvs.capture.batch import PacketBatch
from fastvs.errors import CaptureError, EngineError, FastvsError, OptionError, RulesError

# the one place the version is written: pyproject.toml reads it from here
__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Director",
    "EngineError",
    "FastvsError",
    "OptionError",
    "PacketBatch",
    "RulesError",
    "__version__",
]


def __getattr__(name: str):  # lazy: keep `import fastvs` free of compiled modules
    if name == "Director":
        from fastvs.control.director import Director

        return Director
    raise AttributeError(name)
