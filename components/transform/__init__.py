"""The tensorflow-transform step: vocabularies and model-ready TFRecords (paper 000 §2.7.1; DESIGN §6)."""
