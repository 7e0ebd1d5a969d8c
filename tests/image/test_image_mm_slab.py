"""An mm over an image maps no memory of its own: every image pool's first
slab is one shared, never-written mapping (its top-level table is never
used, and an image pool takes no other table), so fifty mms of one image
add no mapping to the process, and each still walks its own root."""

import numpy as np

import pgwalk


def _mappings_count():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_image_mms_share_their_first_slab(tmp_path):
    img = np.zeros(16 * 512, dtype=np.uint64)
    for root, leaf in ((1, 9), (5, 12)):            # two roots: pgd, pud, pmd, pte tables each
        img[root * 512] = ((root + 1) << 12) | 0x67
        img[(root + 1) * 512] = ((root + 2) << 12) | 0x67
        img[(root + 2) * 512] = ((root + 3) << 12) | 0x67
        img[(root + 3) * 512] = (leaf << 12) | 0x63
    path = tmp_path / "two.raw"
    img.tofile(path)
    image = pgwalk.PhysImage.open(path)
    image.mm(1 << 12).mappings()                   # the shared slab and the free ops exist now
    before = _mappings_count()
    mms = [image.mm((1 if i % 2 else 5) << 12) for i in range(50)]
    assert _mappings_count() - before < 5          # (one each would be 50)
    for i, mm in enumerate(mms):
        maps = mm.mappings()
        assert maps["pa"].tolist() == [(9 if i % 2 else 12) << 12]
