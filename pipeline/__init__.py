"""DVC pipeline stages of the MNIST digit classifier.

download → preprocess → train → evaluate → register, one module each.
"""
