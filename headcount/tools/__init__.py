"""Stand-alone tools for evaluating linkage on data the engine was not tuned on.

`corrupt` adds recording errors to any CSV; `intl_profile` writes a non-UK
synthetic population with heavier errors than `headcount.synth`.
"""
