"""gRPC serving of the digit classifiers on ONNX Runtime (`python -m serving`).

Nothing here imports TensorFlow: the server container has numpy, Pillow, ONNX Runtime,
grpcio and prometheus_client only.
"""
