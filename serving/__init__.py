"""The serving plane: gRPC servicers, history store, vector index, model loading."""
