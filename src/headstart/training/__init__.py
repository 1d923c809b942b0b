"""Training: the one engine both candidates run, its state and checkpoints, torchrun's process group, and
positive-congruent distillation from the champion."""
