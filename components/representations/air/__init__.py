"""AIR: multimodal listing vectors from a pseudo-two-tower trained on co-clicked pairs (paper 000 §3.2, A.6).

``features`` builds each listing's input row, ``tower`` is the shared Keras tower,
``loss`` the in-batch softmax with sampled negatives, ``pairs`` the co-click examples,
``train`` the training loop and held-out recall, ``step`` the pipeline step.
"""
