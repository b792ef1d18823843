"""The conformance kit: what every MoE method must satisfy, for our methods and for methods that
other packages ship (through the `loraocean.methods` entry points). Import it in a test suite:

    from loraocean.testing import CHECKS, Kit, check_method

    def test_my_method_conforms():
        check_method("my_method")                 # every check, on the default device and dtype

    @pytest.mark.parametrize("check", CHECKS)     # or one test per check
    def test_my_method(check):
        check_method("my_method", Kit(device="cpu", dtype=torch.bfloat16), [check])

The checks (`conformance`) build the method as `fit` does on tiny models of every architecture
family with library-like LoRAs and a synthetic task (`fixtures`), offline; docs/adding-a-method.md
says what each one asks.
"""

from loraocean.testing.conformance import CHECKS, ConformanceError, check_method
from loraocean.testing.fixtures import Kit

__all__ = ["CHECKS", "ConformanceError", "Kit", "check_method"]
