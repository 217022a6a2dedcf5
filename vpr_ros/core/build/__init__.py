"""Making maps (from image folders and bags, sharded, on Ray; merging sessions) and training a map's
uncertainty model."""
