"""The engine: configs, Lightning training, runs, checkpoints, evaluation, reports, prediction."""
