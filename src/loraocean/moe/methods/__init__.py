"""One module per method; importing this package registers them all."""

from loraocean.moe.methods import (arrow, baselines, lorahub, loramoe, merges, mole, rocket,  # noqa: F401
                                   xlora)
