"""Pretrained listing representations (paper 000 §2.4, §2.7.2, §3, A.5-A.8; DESIGN §7).

Each representation step writes ``runs/D/<step>/vectors.parquet`` (listing id -> float32
vector, sorted by id) and, when it trains one, its model under ``runs/D/<step>/model/``.
``store`` reads and writes vector tables and the catalog, ``cadence`` finds the model a
step may reuse on a day it does not retrain, ``quality`` computes the taxonomy/color
checks every representation must pass.
"""
