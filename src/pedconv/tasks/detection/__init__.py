"""Object detection on COCO-format data (pedconv detect)."""
