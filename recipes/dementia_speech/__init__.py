"""Dementia detection from spontaneous speech: acoustic + linguistic fusion with optimal-transport domain
adaptation (Ilias & Askounis). ``fusion train dementia --config quick``."""
