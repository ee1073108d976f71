"""Reading, batching, streaming and preparing the Oxford-IIIT Pet data (and a demo set).

As in the article: ``from datasets import data as dataset``.
"""
