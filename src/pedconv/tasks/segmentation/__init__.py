"""Semantic segmentation on ADE20K-layout data (pedconv segment)."""
