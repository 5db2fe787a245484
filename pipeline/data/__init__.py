"""Where the pipeline's data comes from and how it lies on disk: the MNIST sources, the raw IDX
files into seeded splits, the dataset files the stages share, and the exported user feedback."""
