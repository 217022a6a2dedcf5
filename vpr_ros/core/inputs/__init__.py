"""What the camera sends, checked: images (encodings, sizes, files) and intrinsics."""
