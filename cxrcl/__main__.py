"""``python -m cxrcl ...`` (also what ``torchrun -m cxrcl pretrain ...`` runs)."""

import sys

from cxrcl.cli import main

sys.exit(main())
