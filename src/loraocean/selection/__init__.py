"""Expert selection: choosing the k library LoRAs that become the experts for a target task.

    from loraocean.selection import select
    sel = select("gsm8k", "lib/", "smollm2-135m", k=4, strategy="ppl", shots=32)
    sel.chosen, sel.ranking, sel.save("selection.json")

Strategies (registry `STRATEGIES`, `get_strategy(name)`, `all_strategies()`; other packages add
theirs through the `loraocean.strategies` entry points): one module each in this package, each
saying what it needs and its place in `--strategy all` (`every_strategy()`). See docs/selection.md.
"""

from loraocean.selection.base import (STRATEGIES, Choice, ModelRef, Selection, Selector, all_strategies,
                                      get_strategy, strategy)
from loraocean.selection import diversity, embedding, manual, oracle, ppl, random_pick, rocket  # noqa: F401,E402
from loraocean.selection.run import every_strategy, overlap, select, select_many  # noqa: E402

__all__ = ["STRATEGIES", "Choice", "ModelRef", "Selection", "Selector", "all_strategies", "every_strategy",
           "get_strategy", "overlap", "select", "select_many", "strategy"]
