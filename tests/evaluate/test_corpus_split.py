"""``evaluate --data CORPUS --split S`` reads the corpus's own split, as training does."""

from __future__ import annotations

from pathlib import Path

from ultrasam.data.corpus import split_corpus
from ultrasam.data.factory import open_dataset
from ultrasam.evaluate.coco_eval import load_ground_truth

from . import write_tiny_corpus


def test_corpus_split_uses_the_split_merge(tmp_path: Path) -> None:
    corpus = write_tiny_corpus(tmp_path / "corpus")
    split_corpus(corpus, seed=0, progress=False)     # writes {train,val,test}.coco.json here
    seen: list[str] = []
    for split in ("train", "val", "test"):
        gt = load_ground_truth(corpus, split=split)
        direct = load_ground_truth(corpus / f"{split}.coco.json")
        names = sorted(im.path.name for im in gt.images)
        assert names == sorted(im.path.name for im in direct.images)
        assert all(im.path.is_file() for im in gt.images)
        # The images training sees for this split are the ones evaluated.
        trained = open_dataset(corpus, split=split)
        assert names == sorted(trained[i].file_name.split("/")[-1] for i in range(len(trained)))
        seen += names
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 12
