"""Helpers shared by every stage: the contract, image decoding, the model repository."""
