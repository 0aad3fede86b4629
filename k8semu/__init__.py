"""k8semu: a Kubernetes emulator where every component is its own asyncio gRPC process."""

__version__ = "0.1.0"
