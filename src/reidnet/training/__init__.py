"""Training: a spec becomes a trained model. `trainer.TrainingRun` builds the run's parts
(parts.py), resumes (resume.py), feeds batches (batches.py), steps (step.py), validates
(validation.py) and reports (reporting.py); distributed.py is torchrun and DDP. It embeds through
reidnet.runtime and writes checkpoints the runtime reads back."""
