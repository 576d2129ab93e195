"""FlowMo tokenizer: the public names other packages (generator, app, evaluation) use. Data lives in
:mod:`imagedata`."""

from .config import FlowMoConfig
from .loading import load_flowmo
from .model import FlowMo

__all__ = ["FlowMo", "FlowMoConfig", "load_flowmo"]
