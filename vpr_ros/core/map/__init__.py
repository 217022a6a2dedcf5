"""A map on disk and in memory: frame metadata, the faiss index, the recording camera, the map format. It
knows nothing of how it is queried (retrieval/) or built (build/)."""
