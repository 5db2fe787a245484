"""The DVC pipeline of the MNIST digit classifier.

`stages/` holds one thin module per DVC stage (download → preprocess → non_digits → feedback →
train → evaluate → register, and the on-demand drift check); the packages below it do the work:
`data`, `datagen`, `training`, `evaluation`, `registry`, `drift`. At the top only what every stage
shares: `params` (the typed params.yaml), `io` (atomic writes, hashes) and `cli` (the stage
command line).
"""
