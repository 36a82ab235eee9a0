"""Project tooling: base-image builder, SageMaker local-mode drivers, README generators."""
