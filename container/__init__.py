"""The SageMaker container's programs: `train` and `serve` over the /opt/ml contract."""
