"""PyTorch models: neural topic model, mini-batch k-means and star-rating classifier."""
