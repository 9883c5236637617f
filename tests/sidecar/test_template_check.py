"""The load-time check that the checkpoint's chat template renders prompts as sidecar.prompts builds them."""

from __future__ import annotations

import logging

import pytest
from transformers import AutoProcessor

from sidecar.models.template_check import template_difference
from sidecar.server import load_engine
from sidecar.settings import Settings


@pytest.fixture
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(str(tiny_model_dir), local_files_only=True)


@pytest.mark.parametrize("kind", ["reranker", "embedding"])
def test_the_checkpoint_template_and_the_prompt_builder_agree(processor, kind):
    assert template_difference(processor, kind) is None


def test_a_template_that_renders_a_video_differently_is_reported_with_its_position(processor):
    processor.chat_template = processor.chat_template.replace("<|video_pad|>", "<|video_pad|><|video_pad|>")
    difference = template_difference(processor, "reranker")
    assert difference is not None
    assert "<|video_pad|><|video_pad|>" in difference and "(character " in difference


def test_a_template_that_cannot_render_the_sample_is_reported(processor):
    processor.chat_template = "{{ messages[0]['content'].upper() }}"
    assert "cannot render a sample conversation" in template_difference(processor, "embedding")


def test_no_template_means_nothing_to_compare(processor):
    processor.chat_template = None
    assert template_difference(processor, "reranker") is None


def test_the_server_warns_at_load_when_the_template_disagrees(tmp_path, tiny_model_dir, caplog):
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    template = changed / "chat_template.jinja"
    template.write_text(template.read_text().replace("'\\n' }}{% if", "'\\n\\n' }}{% if", 1))
    with caplog.at_level(logging.WARNING, logger="sidecar.server"):
        engine = load_engine(Settings(model=str(changed), compile_layers="off"))
    engine.close()
    assert "scores may drift from the reference's" in caplog.text
