"""The pure domain core: no grpc, protobuf, storage or maxminddb imports."""
