"""FlowMo tokenizer: the public names other packages (generator, app, evaluation) use."""

from .config import FlowMoConfig
from .data import SubsetDataset, build_dataset
from .data.augment import random_affine
from .data.digits import DIGIT_NAMES
from .data.subsets import stack_dataset
from .loading import load_flowmo
from .model import FlowMo
from .photos import COLOUR_SOURCES, Box, RegionSplit, box_inside, side_range, split_regions

__all__ = ["FlowMo", "FlowMoConfig", "load_flowmo",
           "build_dataset", "SubsetDataset", "stack_dataset", "random_affine", "DIGIT_NAMES",
           "COLOUR_SOURCES", "Box", "RegionSplit", "box_inside", "side_range", "split_regions"]
