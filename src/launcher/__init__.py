"""Job launching: local job folders, Docker, SageMaker and Athena through boto3, reports."""
