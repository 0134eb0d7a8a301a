"""python -m irnet_lib.diagrams: write Figures 2 and 4 into figures/."""
from . import main

main()
