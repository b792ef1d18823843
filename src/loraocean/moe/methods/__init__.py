"""One module per method; importing this package registers them all."""

from loraocean.moe.methods import (arrow, baselines, hydralora, lorahub, loramoe, merges, mixlora,  # noqa: F401
                                   mola, mole, rocket, xlora)
