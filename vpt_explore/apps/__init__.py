"""Front ends: show_source for notebooks, the demo and bench commands, and the training lab widgets."""
