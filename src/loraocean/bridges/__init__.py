"""Bridges to the evaluation harnesses users already run: lm-evaluation-harness (`lm_eval_bridge`:
the `loraocean` model of `lm_eval --model loraocean`, our tasks as lm-eval YAML, lm-eval's own scores
for a study) and OpenCompass (`opencompass_bridge`: a model class and our tasks as its configs).

A harness builds our model from strings (`adapter=DIR`), so a bridge puts the LoRA or MoE checkpoint
on the model itself (`loraocean.checkpoints.attach`); that is why this room sits above `checkpoints`
and `evaluation`, whose scoring it reuses. The modules import their harness only when it is installed.
"""
