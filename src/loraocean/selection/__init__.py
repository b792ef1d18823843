"""Expert selection: choosing the k library LoRAs that become the experts for a target task.

    from loraocean.selection import select
    sel = select("gsm8k", "lib/", "smollm2-135m", k=4, strategy="ppl", shots=32)
    sel.chosen, sel.ranking, sel.save("selection.json")

Strategies (registry `STRATEGIES`, `get_strategy(name)`): ppl, random, manual, embedding,
diversity, rocket (Rocket's accuracy shortlist, perplexity and weight diversity), oracle (uses
target labels). See docs/selection.md.
"""

from loraocean.selection.base import STRATEGIES, Choice, ModelRef, Selection, Selector, get_strategy
from loraocean.selection import diversity, embedding, manual, oracle, ppl, random_pick, rocket  # noqa: F401,E402
from loraocean.selection.run import ALL, overlap, select, select_many  # noqa: E402

__all__ = ["ALL", "STRATEGIES", "Choice", "ModelRef", "Selection", "Selector", "get_strategy", "overlap",
           "select", "select_many"]
