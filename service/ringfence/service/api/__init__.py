"""The gRPC edge: servicers, protobuf ⇄ domain conversion, error → status mapping."""
