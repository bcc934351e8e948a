"""Reviews in: file layouts, SQL selection, text preprocessing and SageMaker channel formats."""
