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


# ---- the blur's sigma, the thumbnail's widths, the output format (issue: web-ready outputs) ----


def test_blur_sigma_is_auto_3x3_or_a_number():
    from imgtool.ops.blur import effective_sigma

    assert Settings().blur_sigma == "auto"
    assert Settings(blur_sigma="3x3").blur_sigma == "3x3" and Settings(blur_sigma=None).blur_sigma == "3x3"
    assert Settings().with_job_options({"blur": {"sigma": 7}}).blur_sigma == 7.0
    # Per image: auto is 1.5% of the shorter side (at least 1, at most 50); 3x3 is the old kernel (None).
    assert effective_sigma("auto", 4032, 3024) == pytest.approx(45.36)
    assert effective_sigma("auto", 30, 5000) == 1.0 and effective_sigma("auto", 9000, 8000) == 50.0
    assert effective_sigma("3x3", 4032, 3024) is None and effective_sigma(12.5, 10, 10) == 12.5
    for bad in ("Auto", "3X3", "5", "", None, True, 0, -1, 50.01, float("nan"), [3]):
        with pytest.raises(InvalidJob, match="options.blur.sigma"):
            Settings().with_job_options({"blur": {"sigma": bad}})


def test_thumbnail_widths_validated_and_named():
    s = Settings().with_job_options({"thumbnail": {"width": [256, 640, 1280]}})
    assert s.thumb_width == (256, 640, 1280)
    assert Settings(thumb_width=[320]).thumb_width == 320  # a list of one is one width
    assert ops_output_names("a1-v", s) == ["a1-v_thumbnail.webp", "a1-v_thumbnail-640.webp",
                                           "a1-v_thumbnail-1280.webp", "a1-v_blur.webp", "a1-v_low-quality.webp"]
    for bad in ([], [256, 256], [0], [8193], [256, "640"], [256, 2.0], [True], list(range(1, 10)), "256",
                {"w": 1}):
        with pytest.raises(InvalidJob, match="options.thumbnail.width"):
            Settings().with_job_options({"thumbnail": {"width": bad}})


def ops_output_names(job_id, settings):
    from imgtool.ops import output_names

    return list(output_names(job_id, settings).values())


@pytest.mark.parametrize("w, h, made, skipped", [
    # The first width keeps today's rule (an input narrower keeps its size); a further width
    # above the image's is skipped, one equal to it is the image's own size.
    (1000, 500, {"thumbnail": (256, 128), "thumbnail-640": (640, 320)}, ["thumbnail-1280"]),
    (200, 100, {"thumbnail": (200, 100)}, ["thumbnail-640", "thumbnail-1280"]),
    (640, 480, {"thumbnail": (256, 192), "thumbnail-640": (640, 480)}, ["thumbnail-1280"]),
    (4032, 3024, {"thumbnail": (256, 192), "thumbnail-640": (640, 480), "thumbnail-1280": (1280, 960)}, []),
])
def test_thumbnail_widths_never_upscale(w, h, made, skipped):
    from imgtool.ops import get

    s = Settings(thumb_width=(256, 640, 1280))
    got_made, got_skipped = get("thumbnail").outputs(s, w, h)
    assert got_made == made and sorted(got_skipped) == sorted(skipped)
    assert all(str(w) in reason for reason in got_skipped.values())


def test_format_and_avif_speed_job_options():
    s = Settings().with_job_options({"format": "avif", "avif_speed": 3, "thumbnail": {"width": [64, 128]}})
    assert (s.format, s.avif_speed) == ("avif", 3)
    assert ops_output_names("j", s)[:2] == ["j_thumbnail.avif", "j_thumbnail-128.avif"]
    for bad, field in (({"format": "gif"}, "options.format"), ({"format": 1}, "options.format"),
                       ({"avif_speed": 11}, "options.avif_speed"), ({"avif_speed": "8"}, "options.avif_speed"),
                       ({"avif_speed": -1}, "options.avif_speed")):
        with pytest.raises(InvalidJob, match=field):
            Settings().with_job_options(bad)
    with pytest.raises(InvalidJob, match="cannot be lossless"):
        Settings(lossless=True).with_job_options({"format": "avif"})
    with pytest.raises(InvalidJob, match="cannot be lossless"):
        Settings(format="avif", lossless=True)


def test_output_names_of_every_format_and_width_are_never_inputs():
    assert is_output_name("x_thumbnail-640.webp") and is_output_name("x_blur.avif")
    assert is_output_name("a_b_low-quality.avif") and is_output_name("x_thumbnail-8192.avif")
    for name in ("x_thumbnail-0640.webp", "x_thumbnail-.webp", "x_thumbnail-9000.webp", "x_blur-640.webp",
                 "x_thumbnail-640.png", "x_thumbnail.avif.tmp", "x_sparkle.avif", "thumbnail-640.webp"):
        assert not is_output_name(name), name


def test_fingerprints_change_with_what_decides_each_output():
    from imgtool.ops import get

    thumb, blur = get("thumbnail"), get("blur")
    one, three = Settings(), Settings(thumb_width=(256, 640, 1280))
    # Adding widths leaves the first thumbnail's fingerprint; each width has its own.
    assert thumb.fingerprint(one) == thumb.fingerprint(three, "thumbnail")
    assert len({thumb.fingerprint(three, k) for k in thumb.output_keys(three)}) == 3
    # WebP outputs keep their fingerprints; AVIF's say the format and its speed.
    avif, avif3 = Settings(format="avif"), Settings(format="avif", avif_speed=3)
    assert len({blur.fingerprint(s) for s in (one, avif, avif3)}) == 3
    assert blur.fingerprint(one) != blur.fingerprint(Settings(blur_sigma="3x3"))
