"""Recipes: one package per vertical, plus the shared runtime (``recipes.runtime``) and the ``fusion`` CLI."""
