"""Semantic segmentation: the ADE20K SceneParsing format (:mod:`.ade20k`) and what trains on it."""
