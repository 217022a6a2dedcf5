"""Maps: frame metadata, the faiss index, the on-disk format, building from folders and bags."""
