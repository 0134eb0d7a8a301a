"""irnet_lib: the IR-NET paper's blocks, network, complexity counts, data and training."""
from .blocks import BLOCKS, InvertedResidual, SqueezeExcite, condconv_block, se_block, standard_block
from .condconv import CondConv2d, Routing
from .network import TABLE_1, IRNet, irnet

__version__ = "0.1.0"
__all__ = ["irnet", "IRNet", "TABLE_1", "BLOCKS", "InvertedResidual", "SqueezeExcite", "CondConv2d",
           "Routing", "standard_block", "se_block", "condconv_block"]
