"""Options declared once: the dataclass builds the parser and the parsed flags build the dataclass back."""

import argparse
import dataclasses

import pytest

from facellm.common.options import add_options, add_progress_option, from_args
from facellm.data.generate import Config
from facellm.train.export import ExportConfig


def parser_for(settings: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options(parser, settings)
    add_progress_option(parser)
    return parser


@pytest.mark.parametrize("settings", [Config, ExportConfig])
def test_no_flags_give_the_dataclass_defaults(settings):
    parsed = from_args(settings, parser_for(settings).parse_args([]))
    fields = dataclasses.fields(settings)
    assert all(getattr(parsed, f.name) == f.default for f in fields), parsed


def test_flags_reach_every_field_shared_ones_included():
    args = ["--out", "elsewhere", "--limit", "3", "--backend", "labels", "--timeout", "2.5", "--no-progress"]
    config = from_args(Config, parser_for(Config).parse_args(args))
    assert (str(config.out), config.limit, config.backend, config.timeout) == ("elsewhere", 3, "labels", 2.5)
    assert config.progress is False  # declared by the shared progress group, not by Config
    export = from_args(ExportConfig, parser_for(ExportConfig).parse_args(["--replace", "--shard-gb", "2"]))
    assert export.replace is True and export.shard_gb == 2 and export.verify_only is False


@pytest.mark.parametrize("flag", ["--limit", "--concurrency", "--timeout"])
def test_positive_options_refuse_zero(flag):
    with pytest.raises(argparse.ArgumentError, match=f"argument {flag}: must be positive, got 0"):
        parser_for(Config).parse_args([flag, "0"])


def test_help_shows_each_default_once():
    text = parser_for(Config).format_help()
    assert "(default: 32)" in text and "(default: per-question)" in text
    assert (
        "--limit LIMIT" in text and "only the first N images of the list\n" in text
    )  # no default: none shown
