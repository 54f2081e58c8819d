"""edit-config's pure parts: --set/--pg pairs, YAML patches, and the diff people see."""
from __future__ import annotations

import pytest

from pgwarden.ctl.config_edit import (
    apply_pairs,
    colour_diff_line,
    merge,
    parse_yaml_document,
    pg_pairs,
    unified_diff,
)
from pgwarden.ctl.errors import UsageError
from pgwarden.ctl.output import yaml_text

BASE = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}, "use_slots": True}}


def test_set_takes_dotted_keys_and_yaml_values() -> None:
    out = apply_pairs(BASE, ["loop_wait=5", "synchronous_mode=true", "standby_cluster.host=10.0.0.9",
                             "slots={a: {type: physical}}"])
    assert out["loop_wait"] == 5 and out["synchronous_mode"] is True
    assert out["standby_cluster"] == {"host": "10.0.0.9"}
    assert out["slots"] == {"a": {"type": "physical"}}
    assert BASE["loop_wait"] == 10  # the input is not modified


def test_an_empty_or_null_value_removes_the_key_and_an_emptied_section() -> None:
    out = apply_pairs(BASE, ["ttl=", "postgresql.parameters.max_connections=null"])
    assert "ttl" not in out
    assert "parameters" not in out["postgresql"] and out["postgresql"]["use_slots"] is True


def test_pg_parameters_keep_dots_in_their_names() -> None:
    out = apply_pairs(BASE, pg_pairs(["auto_explain.log_min_duration=1s", " work_mem=8MB"]))
    assert out["postgresql"]["parameters"] == {"max_connections": 100,
                                              "auto_explain.log_min_duration": "1s", "work_mem": "8MB"}


@pytest.mark.parametrize("pair", ["loop_wait", "=5", "x=[unclosed"])
def test_a_malformed_pair_is_a_usage_error(pair: str) -> None:
    with pytest.raises(UsageError):
        apply_pairs(BASE, [pair])


def test_merge_is_recursive_and_null_deletes() -> None:
    out = merge(BASE, {"loop_wait": None, "postgresql": {"parameters": {"work_mem": "8MB"}},
                       "new": {"a": 1, "gone": None}})
    assert "loop_wait" not in out
    assert out["postgresql"]["parameters"] == {"max_connections": 100, "work_mem": "8MB"}
    assert out["new"] == {"a": 1}


def test_a_patch_that_is_not_a_mapping_is_refused_with_where() -> None:
    with pytest.raises(UsageError, match="must be a mapping"):
        parse_yaml_document("- a\n- b\n", "patch.yaml")
    with pytest.raises(UsageError, match="patch.yaml: invalid YAML at line 3"):
        parse_yaml_document("a: 1\nb: [\n", "patch.yaml")
    assert parse_yaml_document("", "patch.yaml") == {}


def test_the_diff_is_a_unified_diff_of_the_yaml_texts() -> None:
    before = yaml_text(BASE)
    after = yaml_text(apply_pairs(BASE, ["loop_wait=5"]))
    lines = list(unified_diff(before, after))
    # patronictl's header lines (no file names), then one hunk with 3 lines of context
    assert lines == ["--- ", "+++ ", "@@ -1,4 +1,4 @@", "-loop_wait: 10", "+loop_wait: 5",
                     " postgresql:", "   parameters:", "     max_connections: 100"]
    assert list(unified_diff(before, before)) == []


def test_terminal_colours_mark_additions_removals_and_hunks() -> None:
    assert colour_diff_line("+a") == "\x1b[32m+a\x1b[0m"
    assert colour_diff_line("-a") == "\x1b[31m-a\x1b[0m"
    assert colour_diff_line("@@ -1 +1 @@").startswith("\x1b[36m")
    assert colour_diff_line(" same") == " same"
