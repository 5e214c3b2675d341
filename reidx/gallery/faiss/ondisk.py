"""IVF indexes whose inverted lists live in a file (``faiss.OnDiskInvertedLists``), for galleries larger
than memory: vectors are added in shards (one in memory at a time, each written beside the target and
memory-mapped), then the shards' lists are merged into one lists file that search memory-maps."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reidx.gallery.faiss.calls import pre_transformed, write_faiss

#: Vectors per in-memory shard (codes + ids: about 72 MB per million at 64 bytes/vector).
SHARD_VECTORS = 2_000_000


def write_on_disk(
    index: Any, vectors: Iterable[np.ndarray], index_path: Path, lists_path: Path, shard_vectors: int = 0
) -> int:
    """Add ``vectors`` (ids 0, 1, ... in order) to the trained, empty IVF ``index`` (or a pre-transform
    around one) and write it to ``index_path`` with its lists in ``lists_path`` (read it back with
    ``faiss.IO_FLAG_ONDISK_SAME_DIR``); returns the vectors added. The shard files are removed.
    ``shard_vectors``: vectors per shard (0: SHARD_VECTORS)."""
    import faiss

    shard_vectors = shard_vectors or SHARD_VECTORS
    ivf = faiss.extract_index_ivf(index)  # shards hold the IVF alone (FAISS cannot clone every transform)
    shards: list[Path] = []
    shard, added = faiss.clone_index(ivf), 0
    try:
        for chunk in vectors:
            inputs = pre_transformed(index, np.ascontiguousarray(chunk, dtype=np.float32))
            shard.add_with_ids(inputs, np.arange(added, added + len(chunk)))
            added += len(chunk)
            if shard.ntotal >= shard_vectors:
                shards.append(write_shard(shard, lists_path, len(shards)))
                shard = faiss.clone_index(ivf)
        if shard.ntotal or not shards:
            shards.append(write_shard(shard, lists_path, len(shards)))
        del shard
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_path))
        opened = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in shards]
        parts = faiss.InvertedListsPtrVector()
        for part in opened:
            parts.push_back(faiss.extract_index_ivf(part).invlists)
        with quiet_c_stdout():  # FAISS prints each resize of the lists file
            lists.merge_from_multiple(parts.data(), parts.size())
        del parts, opened
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns the lists now
        ivf.ntotal = index.ntotal = added
        write_faiss(index, index_path)
    finally:
        for path in shards:
            path.unlink(missing_ok=True)
    return added


def write_shard(shard: Any, lists_path: Path, number: int) -> Path:
    """Write one shard index beside the lists file; its path."""

    path = lists_path.with_name(f".shard-{number:04d}.faiss")
    write_faiss(shard, path)
    return path


@contextmanager
def quiet_c_stdout() -> Iterator[None]:
    """Send what C code prints on file descriptor 1 to /dev/null meanwhile (FAISS's on-disk lists print
    notes there, which would break ``--json`` output)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_on_disk(path: Path) -> object:
    """``faiss.read_index`` of an index whose lists file lies beside it (wherever the folder has moved)."""
    import faiss

    with quiet_c_stdout():  # "IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename ..."
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
