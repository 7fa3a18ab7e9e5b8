"""One thin click command per DVC stage: read params.yaml, validate, call the library, write outs."""
