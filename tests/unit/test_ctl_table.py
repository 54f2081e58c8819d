"""pgwardenctl's tables are laid out character for character like patronictl's (prettytable).

The expected texts were produced by patronictl 4.1.5's own print_output.
"""
from __future__ import annotations

from pgwarden.ctl.output import format_rows
from pgwarden.ctl.table import render_table

LIST_ALIGN = {"Receive LSN": "r", "Replay LSN": "r", "Lag": "r", "TL": "r"}


def test_a_titled_table_puts_the_title_into_the_top_rule_and_aligns_numbers_right() -> None:
    text = render_table(
        ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag", "Replay LSN", "Lag"],
        [["n1", "127.0.0.1:5432", "Leader", "running", 1, "", "", "", ""],
         ["n2", "127.0.0.1:5433", "Replica", "streaming", 1, "0/3000060", 0, "0/3000060", 0]],
        " Cluster: demo (7301234567890123456) ", LIST_ALIGN)
    assert text == """\
+ Cluster: demo (7301234567890123456) ----------+----+-------------+-----+------------+-----+
| Member | Host           | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag |
+--------+----------------+---------+-----------+----+-------------+-----+------------+-----+
| n1     | 127.0.0.1:5432 | Leader  | running   |  1 |             |     |            |     |
| n2     | 127.0.0.1:5433 | Replica | streaming |  1 |   0/3000060 |   0 |  0/3000060 |   0 |
+--------+----------------+---------+-----------+----+-------------+-----+------------+-----+"""


def test_a_title_longer_than_the_table_is_cut_to_fit() -> None:
    assert render_table(["a"], [["x"]], " Cluster: averyveryverylongname (uninitialized) ") == \
        "+ Cl+\n| a |\n+---+\n| x |\n+---+"


def test_an_empty_table_still_has_its_header_and_closing_rule() -> None:
    assert render_table(["TL", "LSN", "Reason", "Timestamp", "New Leader"], [], align={"TL": "r", "LSN": "r"}) == """\
+----+-----+--------+-----------+------------+
| TL | LSN | Reason | Timestamp | New Leader |
+----+-----+--------+-----------+------------+
+----+-----+--------+-----------+------------+"""


def test_a_multi_line_cell_grows_its_row_and_rules_separate_every_row() -> None:
    text = render_table(["Member", "Tags"], [["n1", "nofailover: false"], ["n2", "clonefrom: true\nnofailover: false"]])
    assert text == """\
+--------+-------------------+
| Member | Tags              |
+--------+-------------------+
| n1     | nofailover: false |
+--------+-------------------+
| n2     | clonefrom: true   |
|        | nofailover: false |
+--------+-------------------+"""


def test_json_leaves_out_empty_cells_of_titled_tables_only() -> None:
    columns, rows = ["Cluster", "Member", "TL"], [["d", "n1", ""]]
    assert format_rows(columns, rows, "json", title=" Cluster: d ") == '[{"Cluster": "d", "Member": "n1"}]'
    assert format_rows(columns, rows, "json") == '[{"Cluster": "d", "Member": "n1", "TL": ""}]'


def test_yaml_is_a_list_of_objects_with_sorted_keys() -> None:
    text = format_rows(["Member", "Host", "TL"], [["n1", "h", 3]], "yaml", title=" Cluster: d ")
    assert text == "- Host: h\n  Member: n1\n  TL: 3"


def test_tsv_has_a_header_line_and_one_line_per_row_with_the_delimiter() -> None:
    assert format_rows(["Member", "Host"], [["n1", "h"], ["n2", ""]], "tsv") == "Member\tHost\nn1\th\nn2\t"
    assert format_rows(["a", "b"], [[1, 2]], "tsv", delimiter=",") == "a,b\n1,2"
