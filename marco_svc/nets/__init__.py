"""Networks, their model cards, preprocessing and runners."""
