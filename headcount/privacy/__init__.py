"""Differential-privacy kernel: noise in shares, the per-period accountant, attack-game bounds."""
