"""The DVC stages, one thin module each (`python -m pipeline.stages.<stage>`): read the stage's
params section, call the package that does the work, write the outputs `dvc.yaml` names."""
