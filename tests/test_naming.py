"""Export file names: templates are checked, every rendered name is one safe plain file name."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zitflow.job import safe_join
from zitflow.naming import MAX_NAME, TemplateError, check_template, prompt_slug, render_name, sanitize

SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
JOB = {"recipe": "poster", "seed": 42, "stage": "export", "prompt": "a cat", "config_hash": "0123456789abcdef",
       "model": "tiny", "width": 1080, "height": 1920, "format": "png"}


def assert_safe(name, tmp_path):
    assert SAFE.match(name), name
    assert ".." not in name and "/" not in name and "\\" not in name and len(name) <= MAX_NAME
    assert safe_join(tmp_path, name).parent == tmp_path.resolve()


@pytest.mark.parametrize("text, expected", [
    ("../../etc/passwd", "etc_passwd"),
    ("a/b\\c", "a_b_c"),
    (".hidden", "hidden"),
    ("..", "image"),
    ("", "image"),
    ("café crème", "cafe_creme"),
    ("水墨竹林，晨雾", "image"),
    ("x\x00y\nz", "x_y_z"),
    ("C:\\Windows\\system32", "C_Windows_system32"),
    ("name....png", "name.png"),
])
def test_sanitize_cases(text, expected):
    assert sanitize(text) == expected


def test_sanitize_limits_length():
    assert len(sanitize("a" * 1000)) == MAX_NAME
    assert len(sanitize("a" * 1000, max_len=10)) == 10


def test_default_style_template(tmp_path):
    name = render_name("{recipe}_{seed}_{stage}", JOB, "png")
    assert name == "poster_42_export.png"
    assert_safe(name, tmp_path)


def test_malicious_prompt_and_recipe_yield_safe_names(tmp_path):
    for prompt in ("../../etc/passwd", "a/b\\c", "/abs/path", "..\\..\\win.ini", "\x00", " . "):
        name = render_name("{prompt}", dict(JOB, prompt=prompt), "png")
        assert_safe(name, tmp_path)
    name = render_name("{recipe}_{prompt}", dict(JOB, recipe="../../x", prompt="../../etc/passwd"), "jpg")
    assert name == "x_etc_passwd.jpg"
    assert_safe(name, tmp_path)
    assert render_name("{prompt}", dict(JOB, prompt="a/b\\c"), "png") == "a_b_c.png"


def test_prompt_without_safe_characters_is_hashed():
    assert prompt_slug("水墨竹林") == prompt_slug("水墨竹林") != prompt_slug("晨雾")
    assert re.fullmatch(r"p[0-9a-f]{8}", prompt_slug("水墨竹林"))
    assert prompt_slug("a cat, by the window") == "a_cat_by_the_window"
    assert len(prompt_slug("word " * 100)) <= 40


def test_numeric_spec_and_missing_seed():
    assert render_name("{recipe}_{seed:06}", JOB, "png") == "poster_000042.png"
    assert render_name("{recipe}_{seed}", dict(JOB, seed=None), "png") == "poster_noseed.png"
    assert render_name("{width}x{height}", JOB, "webp") == "1080x1920.webp"


def test_long_names_keep_their_extension():
    name = render_name("{recipe}", dict(JOB, recipe="r" * 500), "webp")
    assert len(name) == MAX_NAME and name.endswith(".webp")


def test_reserved_windows_names_are_prefixed():
    assert render_name("{recipe}", dict(JOB, recipe="CON"), "png") == "_CON.png"


@pytest.mark.parametrize("template, words", [
    ("{bogus}", ["unknown placeholder {bogus}", "{recipe}", "{seed}", "{prompt}"]),
    ("{recipe.__class__}", ["unknown placeholder", "allowed"]),
    ("{seed[0]}", ["unknown placeholder"]),
    ("{prompt!r}", ["conversion '!r'", "not allowed"]),
    ("{prompt:>400}", ["format spec ':>400'", "zero-padded width"]),
    ("{seed:>400}", ["format spec"]),
    ("{recipe", ["malformed"]),
    ("", ["empty"]),
])
def test_bad_templates_say_what_is_allowed(template, words):
    with pytest.raises(TemplateError) as e:
        check_template(template)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_literal_braces_are_allowed():
    assert check_template("{{x}}_{seed}") == ["seed"]
    assert render_name("{{x}}_{seed}", JOB, "png") == "x_42.png"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=60))
def test_any_prompt_and_recipe_render_safely(tmp_path_factory, prompt, recipe):
    tmp = tmp_path_factory.getbasetemp()
    name = render_name("{recipe}_{prompt}_{seed}", dict(JOB, prompt=prompt, recipe=recipe), "png")
    assert_safe(name, tmp)
    assert name.endswith(".png")
