"""Fusion: modality tokens -> fusion encoder -> projector into the compact LM, calibrated late fusion, and the
affective tree built from them.

- ``fusion.late``: per-modality evidence and reliability-weighted late fusion (``LateFusion``, ``FusedEmotion``).
- ``fusion.adapter``: modality tokens and the ``FusionAdapter`` (fusion encoder + projector into the LM).
- ``fusion.lm``: the compact language model (``CompactLM``; SmolLM2-135M-Instruct offline), soft prefixes, LoRA.
- ``fusion.reasoner``: the adapter + LM at work (``AdapterReasoner``: labels read from the LM, the tree's texts).
- ``fusion.tree``: ``build_tree`` (the affective tree; its structured nodes never depend on the LM).
- ``fusion.safety``: risk recognition (suicidal ideation, self-harm, harm to/from others, attachment), the crisis
  and boundary replies and ``check_reply``; pattern-based, no model.
- ``fusion.strategy``: the ESConv support-strategy planner; ``fusion.affect_state``: per-user valence/arousal/
  dominance over turns; ``fusion.memory``: emotional memory (recall by content and mood).

Submodules load torch and transformers; import them directly (nothing is imported here).
"""
