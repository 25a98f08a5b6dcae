"""MorphZoo sub-package."""
