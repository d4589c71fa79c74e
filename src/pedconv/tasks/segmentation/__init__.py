"""Semantic segmentation (``pedconv segment``, Table 3): the ADE20K SceneParsing format (:mod:`.ade20k`),
mIoU (:mod:`.metrics`), the task on the training pipeline (:mod:`.task`) and its command (:mod:`.command`)."""
