"""One entry per DVC stage (``python -m fplstudy.stages.<stage>``): each reads its parameters, calls the
library and writes the stage's outputs; ``dvc.yaml`` runs them."""
