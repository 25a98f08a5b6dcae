"""Infer and train tasks of the MorphZoo MONAI Label app (``tools/monailabel_app``)."""
