"""Data: per-source converters to COCO, the corpus builder, packs and training datasets."""
