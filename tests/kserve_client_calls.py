"""Calls a running server's HTTP port with the kserve SDK's REST client (protocol v2), the
way a KServe user's code does; run in .venv-clients by tests/test_inference_protocol.py.

    python tests/kserve_client_calls.py URL INPUTS.npz ANSWERS.npy

Sends `pixels` (uint8 [N, 100, 100]) as FP32 [N, 100, 100, 1] JSON data (typed, no binary
extension: what the SDK sends for numpy input) and saves the probabilities.
"""

import asyncio
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(url: str, inputs: str, answers: str) -> None:
    pixels = np.load(inputs)["pixels"][..., None].astype(np.float32)
    tensor = InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=False)
    request = InferRequest(model_name="scratch_cnn", infer_inputs=[tensor], request_id="k1")
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        response = await client.infer(url, request, model_name="scratch_cnn")
    finally:
        await client.close()
    assert response.id == "k1", response.id
    np.save(answers, response.outputs[0].as_numpy())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
