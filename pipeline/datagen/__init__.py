"""Generated pictures: the non-digit families that the model learns to flag, and real-looking
digits (fonts, mouse drawings) that MNIST does not have."""
