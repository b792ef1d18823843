"""LoRAOcean: a reproducible benchmark for LoRA mixture-of-experts methods."""

__version__ = "0.1.0"

from loraocean.errors import LoraOceanError  # noqa: E402

__all__ = ["LoraOceanError", "__version__"]
