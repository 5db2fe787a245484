"""Training the CNN: the model, its input tensors, augmentation, the training loop, checkpoints,
data-parallel processes, calibration, the ONNX export, and the job that ties them to MLflow."""
