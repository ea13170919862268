"""The operation registry: output sizes, names and option validation."""

import pytest

from imgtool.errors import InvalidJob
from imgtool.ops import Settings, blur_radius, is_output_name, job_id_for, output_name, output_size


@pytest.mark.parametrize("w, h, expect", [
    (4032, 3024, (256, 192)), (3024, 4032, (256, 341)), (257, 1, (256, 1)), (10000, 10, (256, 1)),
    (256, 100, (256, 100)), (100, 700, (100, 700)), (1, 1, (1, 1)), (513, 2, (256, 1)),
])
def test_thumbnail_size(w, h, expect):
    assert output_size("thumbnail", w, h, Settings()) == expect


@pytest.mark.parametrize("w, h, expect", [(1, 1, (1, 1)), (2, 3, (1, 1)), (5, 9, (2, 4)), (4032, 3024, (2016, 1512))])
def test_low_quality_size(w, h, expect):
    assert output_size("low-quality", w, h, Settings()) == expect


def test_blur_keeps_size_and_radius():
    assert output_size("blur", 7, 3, Settings()) == (7, 3)
    assert blur_radius(None) == 1 and blur_radius(1.0) == 3 and blur_radius(50) == 150 and blur_radius(0.1) == 1


def test_names():
    assert job_id_for("/u/1/a1b2-vacation.jpg") == "a1b2-vacation"
    assert job_id_for("archive.tar.gz") == "archive.tar"
    assert output_name("a1b2-vacation", "low-quality") == "a1b2-vacation_low-quality.webp"
    assert is_output_name("x_blur.webp") and not is_output_name("x_blur.png") and not is_output_name("x.webp")


def test_job_options_apply_and_validate():
    s = Settings().with_job_options({"thumbnail": {"width": 320, "quality": 70}, "blur": {"sigma": 12}})
    assert s.thumb_width == 320 and s.blur_sigma == 12.0 and s.quality["thumbnail"] == 70
    assert Settings().with_job_options(None) == Settings()
    for bad in ([], {"sparkle": {}}, {"blur": 3}, {"blur": {"sigma": 0}}, {"blur": {"sigma": 51}},
                {"blur": {"sigma": "2"}}, {"thumbnail": {"width": 0}}, {"thumbnail": {"width": 2.5}},
                {"thumbnail": {"width": True}}, {"low-quality": {"quality": 101}}, {"blur": {"width": 3}}):
        with pytest.raises(InvalidJob):
            Settings().with_job_options(bad)


def test_settings_validation():
    for bad in (dict(ops=()), dict(ops=("thumbnail", "thumbnail")), dict(ops=("zoom",)), dict(effort=7),
                dict(thumb_width=0), dict(blur_sigma=-1.0), dict(max_pixels=0)):
        with pytest.raises(InvalidJob):
            Settings(**bad)
