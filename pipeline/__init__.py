"""DVC pipeline stages for the MNIST digit classifier: download → preprocess → train → evaluate → register."""
