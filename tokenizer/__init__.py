"""FlowMo tokenizer: the public names other packages (generator, app, evaluation) use. Data lives in
:mod:`imagedata`."""

from .code_search import CodeSearchResult, search_code, search_evaluations
from .config import FlowMoConfig
from .loading import load_flowmo
from .model import FlowMo

__all__ = ["CodeSearchResult", "FlowMo", "FlowMoConfig", "load_flowmo", "search_code", "search_evaluations"]
