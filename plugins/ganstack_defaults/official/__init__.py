"""Importers of the authors' released files: official checkpoints as ganstack run folders."""
