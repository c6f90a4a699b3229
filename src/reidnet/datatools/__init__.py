"""Dataset tools: checking a Market-1501-layout dataset and making one (synthetic pedestrians, crops
from MOT tracking ground truth). Training reads datasets through `reidnet.data`; nothing here is on
that path.
"""
