"""Which files count as inputs when walking folders."""

from pathlib import Path

from imgtool.pipeline import list_inputs as walk
from imgtool.storage import is_candidate


def test_walk_skips_processed_hidden_temporary_and_outputs(tmp_path):
    files = ["a.jpg", "B.PNG", "sub/c.webp", "sub/deeper/d.tiff", "processed/a_thumbnail.webp",
             "sub/processed/x.jpg", ".hidden.jpg", ".git/e.jpg", "f.jpg.tmp", "g.part", "h.jpg~",
             "notes.txt", "i_blur.webp", "j.heic"]
    for f in files:
        p = tmp_path / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = sorted(str(p.relative_to(tmp_path)) for p in walk(tmp_path))
    assert found == ["B.PNG", "a.jpg", "j.heic", "sub/c.webp", "sub/deeper/d.tiff"]


def test_is_candidate():
    assert is_candidate(Path("/u/1/x.jpeg"))
    assert not is_candidate(Path("/u/1/processed/x.jpeg"))
    assert not is_candidate(Path("/u/1/x_thumbnail.webp"))
    assert not is_candidate(Path("/u/1/.x.jpg"))
    assert not is_candidate(Path("/u/1/x.jpg.part"))


def test_largest_files_first_within_a_folder(tmp_path):
    for name, size in [("a.jpg", 10), ("b.jpg", 300), ("c.jpg", 20), ("d.jpg", 300)]:
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x" * 999)
    assert [p.name for p in walk(tmp_path)] == ["b.jpg", "d.jpg", "c.jpg", "a.jpg", "e.jpg"]


def test_more_pixels_first_even_in_a_smaller_file(tmp_path):
    import numpy as np
    from PIL import Image

    Image.new("RGB", (2000, 2000), (10, 20, 30)).save(tmp_path / "flat.png")  # small file, 4 MP
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 10)
    assert (tmp_path / "flat.png").stat().st_size < (tmp_path / "noise.png").stat().st_size
    assert [p.name for p in walk(tmp_path)] == ["flat.png", "noise.png", "broken.png"]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    gone = tmp_path / "gone"
    seen = []
    assert list(walk(gone, on_error=lambda folder, exc: seen.append((folder, type(exc))))) == []
    assert seen == [(gone, FileNotFoundError)]
    assert [p.name for p in walk(tmp_path, on_error=lambda *a: seen.append(a))] == ["a.jpg"] and len(seen) == 1


def test_every_accepted_suffix_is_walked(tmp_path):
    names = ["a.mpo", "b.apng", "c.avifs", "d.dib", "e.ppm", "f.pgm", "g.pbm", "h.pnm", "i.hif", "j.AVIFS"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    assert sorted(p.name for p in walk(tmp_path)) == sorted(names)
