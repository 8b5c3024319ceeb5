"""SeRALM alignment jobs: the trainer, the asynchronous generator, the ml-100k job."""
