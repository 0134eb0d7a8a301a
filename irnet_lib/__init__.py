"""irnet_lib: the IR-NET paper's blocks, network, complexity counts, data and training.

Read in this order: ``blocks.py`` (Figure 2's three blocks), ``network.py`` (Table 1),
``condconv.py`` (Figure 4), ``train.py`` (the loop) with ``recipe.py`` (Table 2). Everything that
exists only for speed is in ``irnet_lib.fast``, off unless asked for.
"""
from .blocks import BLOCKS, InvertedResidual, SqueezeExcite, condconv_block, se_block, standard_block
from .condconv import CondConv2d, Routing
from .network import TABLE_1, IRNet, irnet
from .pretrained import load_pretrained

__version__ = "0.2.0"
__all__ = ["irnet", "IRNet", "TABLE_1", "BLOCKS", "InvertedResidual", "SqueezeExcite", "CondConv2d",
           "Routing", "standard_block", "se_block", "condconv_block", "load_pretrained"]
