"""FlowMo tokenizer: public model names only."""

from .config import FlowMoConfig
from .loading import load_flowmo
from .model import FlowMo

__all__ = ["FlowMo", "FlowMoConfig", "load_flowmo"]
