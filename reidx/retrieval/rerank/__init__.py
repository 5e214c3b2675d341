"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact and sparse: the batch form
(:func:`rerank`, queries and gallery in one graph) and the online form (:class:`GalleryRerank`, the
published algorithm on gallery ∪ {query} per query). The dense reference is :mod:`.reference`."""

from reidx.retrieval.rerank.batch import Reranked, rerank
from reidx.retrieval.rerank.graph import PUBLISHED, RerankParams
from reidx.retrieval.rerank.online import GalleryRerank

__all__ = ["PUBLISHED", "GalleryRerank", "RerankParams", "Reranked", "rerank"]
