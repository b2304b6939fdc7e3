"""Moving a notebook's run to Amazon SageMaker: capture the cells, convert them, run the job."""
