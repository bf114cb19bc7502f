"""Importers of the authors' files: official checkpoints become ganstack run folders."""
