"""Review NLP on SageMaker: topic model, k-means and star-rating classifier for customer reviews."""

__version__ = "0.1.0"
