"""A plaintext gRPC server with only ``grpc.health.v1``, for probes that cannot speak TLS or
send a token (Kubernetes' native grpc probes). It shares the main server's health servicer,
so it turns NOT_SERVING with it on shutdown."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc


async def start_probe_server(servicer: health.aio.HealthServicer, host: str, port: int, *,
                             reuse_port: bool = False) -> tuple[grpc.aio.Server, int]:
    """Start it; returns the server and its bound port. ``reuse_port``: worker processes
    share the port (any of them answers for the pod)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096),
                                      ("grpc.so_reuseport", int(reuse_port))])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
