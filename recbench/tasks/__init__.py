"""Task heads: each owns the loss and the metrics of one prediction target."""
