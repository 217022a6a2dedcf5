"""Global descriptors: named presets, the project's own nets, published VPR architectures, weights."""
