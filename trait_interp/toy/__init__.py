"""The embedded toy world: tiny trained models with planted traits and the lexicon oracle judge.

Nothing outside this package imports it by name, except the toy stages (``build_toy_models``,
``build_toy_lora``) and the judge's ``lexicon`` backend, which loads it only when asked for: the
folder can be deleted without touching the other phases.
"""
