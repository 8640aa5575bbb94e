"""``bidflow explain FILE``: logged requests explained as the model server explains them, refused lines reported."""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.errors import ConfigError, InputError, ModelError
from bidflow.modeling.explain import ADDITIVITY_TOLERANCE, Contributions, contributions
from bidflow.modeling.train import TrainedModel, save_model
from tests.unit.serving.test_ctr import _instances, ctr_model, ipinyou_rows

__all__ = ["ctr_model", "ipinyou_rows"]

BAD_JSON_LINE = 3
WIDE_BANNER_LINE = 5


def _write(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _banner_auctions(bid_logs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` logged auctions whose first impression is a banner (one of them gets a bad width)."""
    found = [r for r in bid_logs if "banner" in r["request"]["imp"][0]]
    assert len(found) >= n
    return found[:n]


@pytest.fixture(scope="module")
def bid_requests(tmp_path_factory: pytest.TempPathFactory, bid_logs: list[dict[str, Any]]) -> Path:
    """Every line shape a bid-filter request file may hold, gzip, with a non-JSON line and a refused request."""
    a, b, c, d, e = _banner_auctions(bid_logs, 5)
    wide = copy.deepcopy(d)
    wide["request"]["imp"][0]["banner"]["w"] = "wide"
    partners = [o["partner"] for o in c["outcomes"]]
    two = [o["partner"] for o in e["outcomes"][:2]]
    lines = [
        json.dumps(a),  # 1: a `bidflow simulate` record
        json.dumps(b),  # 2: another
        '{"instances": [',  # 3: not JSON (a truncated line)
        json.dumps({"instances": [{"request": c["request"], "ts_ms": c["ts_ms"], "partners": partners}]}),  # 4: v1
        json.dumps(wide),  # 5: refused: a banner width that is not an integer
        "",  # 6: blank, skipped
        json.dumps({"request": e["request"], "ts_ms": e["ts_ms"], "partners": two}),  # 7: a bare instance
    ]
    return _write(tmp_path_factory.mktemp("explain") / "requests.jsonl.gz", lines)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["explain", *args], catch_exceptions=False)


def _expected(trained: TrainedModel, bid_rows: pd.DataFrame, auction_id: str, partners: list[str]) -> Contributions:
    """Training's contributions for an auction's partners (the ingested rows of the same generated auction)."""
    frame = bid_rows[bid_rows["auction_id"] == auction_id].set_index("partner").loc[partners].reset_index()
    return contributions(trained, trained.matrix(frame))


def _check_row(answer: dict[str, Any], expected: Contributions, i: int, features: int) -> None:
    assert answer["score"] == pytest.approx(float(expected.scores[i]), abs=1e-5)
    assert answer["base_value"] == pytest.approx(expected.base, abs=1e-6)
    assert answer["margin"] == pytest.approx(float(expected.margin[i]), abs=ADDITIVITY_TOLERANCE)
    by_name = {c["feature"]: c["contribution"] for c in answer["contributions"]}
    assert len(by_name) == features
    assert [by_name[f] for f in expected.features] == pytest.approx(expected.values[i].tolist(), abs=1e-6)
    assert sum(by_name.values()) + answer["base_value"] == pytest.approx(answer["margin"], abs=ADDITIVITY_TOLERANCE)


def test_json_holds_the_servers_explanations_of_every_line_shape(
    bid_requests: Path, model_dir: Path, trained: TrainedModel, bid_rows: pd.DataFrame
) -> None:
    result = _invoke(str(bid_requests), "--model", str(model_dir), "--format", "json", "--top", "0")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["lines"], body["explained_lines"]) == (6, 4)
    assert [a["line"] for a in body["explanations"]] == [1, 2, 4, 7]
    rows = 0
    for answer in body["explanations"]:
        (auction,) = answer["explanations"]
        partners = [p["partner"] for p in auction["partners"]]
        expected = _expected(trained, bid_rows, auction["id"], partners)
        assert auction["fail_open"] is False and auction["model_version"] == str(model_dir)
        for i, partner in enumerate(auction["partners"]):
            _check_row(partner, expected, i, len(trained.spec.names))
            assert partner["decision"] in ("call", "skip")
            rows += 1
    assert body["explained_rows"] == rows
    # The mean |contribution| is over every explained row and every feature, largest first.
    means = body["mean_abs_contribution"]
    assert set(means) == set(expected.features)
    assert list(means.values()) == sorted(means.values(), reverse=True)

    refused = {r["line"]: r for r in body["refused"]}
    assert set(refused) == {BAD_JSON_LINE, WIDE_BANNER_LINE}
    assert refused[BAD_JSON_LINE]["field"] == "$" and "not valid JSON" in refused[BAD_JSON_LINE]["error"]
    # The path in the line as written (a record), not in the body the server read.
    assert refused[WIDE_BANNER_LINE]["field"] == "$.request.imp[0].banner.w"
    assert "refused 2 lines" in result.stderr
    assert f"line {WIDE_BANNER_LINE}: $.request.imp[0].banner.w:" in result.stderr


def test_auction_log_records_are_explained_for_their_called_partners(
    bid_requests: Path, model_dir: Path, bid_logs: list[dict[str, Any]]
) -> None:
    body = json.loads(_invoke(str(bid_requests), "--model", str(model_dir), "--format", "json").stdout)
    first = _banner_auctions(bid_logs, 1)[0]
    (auction,) = body["explanations"][0]["explanations"]
    assert auction["id"] == first["request"]["id"]
    assert [p["partner"] for p in auction["partners"]] == [o["partner"] for o in first["outcomes"]]
    assert body["top"] == 8  # explain.top by default
    assert all(len(p["contributions"]) == 8 for p in auction["partners"])


def test_table_shows_each_partner_with_score_decision_and_top_contributions(
    bid_requests: Path, model_dir: Path, trained: TrainedModel, bid_rows: pd.DataFrame
) -> None:
    result = _invoke(str(bid_requests), "--model", str(model_dir), "--top", "3")
    assert result.exit_code == 0, result.output
    text = result.stdout
    data = json.loads(_invoke(str(bid_requests), "--model", str(model_dir), "--format", "json").stdout)
    blocks = text.split("\n\n")
    for answer in data["explanations"]:
        (auction,) = answer["explanations"]
        expected = _expected(trained, bid_rows, auction["id"], [p["partner"] for p in auction["partners"]])
        for i, partner in enumerate(auction["partners"]):
            title = f"auction {auction['id']} / partner {partner['partner']} (line {answer['line']})"
            (block,) = [b for b in blocks if b.startswith(title + "\n")]
            facts, header, *contribution_lines = block.splitlines()[1:]
            assert f"score {expected.scores[i]:.4f}" in facts
            assert f"decision {partner['decision']}" in facts and f"base value {expected.base:+.4f}" in facts
            assert header.split() == ["feature", "value", "contribution"]
            assert len(contribution_lines) == 3
            # The largest |contribution| first, as training's contributions rank them.
            ranked = np.argsort(-np.abs(expected.values[i]), kind="stable")[:3]
            for line, j in zip(contribution_lines, ranked, strict=True):
                feature, *_, value = line.split()
                assert feature == expected.features[j]
                assert float(value) == pytest.approx(expected.values[i][j], abs=1e-4)
    assert f"line {BAD_JSON_LINE}: $: request body is not valid JSON" in text
    assert f"line {WIDE_BANNER_LINE}: $.request.imp[0].banner.w: wrong type" in text


def test_html_is_one_page_with_the_mean_contributions_on_top(
    bid_requests: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report" / "explain.html"
    result = _invoke(str(bid_requests), "--model", str(model_dir), "--format", "html", "--out", str(out), "--top", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"wrote html to {out}" in result.stderr
    html = out.read_text()
    data = json.loads(_invoke(str(bid_requests), "--model", str(model_dir), "--format", "json").stdout)
    assert html.startswith("<!doctype html>") and "<script" not in html and "http" not in html  # self-contained
    mean_at, refused_at, rows_at = (html.index(h) for h in ("<h2>Mean |contribution|", "<h2>Refused", "<h2>Rows"))
    assert mean_at < refused_at < rows_at
    mean_table = html[mean_at:refused_at]
    means = data["mean_abs_contribution"]
    cells = re.findall(r'<tr><td class="l">([^<]+)</td><td>([^<]+)</td></tr>', mean_table)
    assert [f for f, _ in cells] == list(means)
    assert [float(v) for _, v in cells] == pytest.approx(list(means.values()), abs=5e-5)
    rows = html[rows_at:].split("<h3>")[1:]
    assert len(rows) == data["explained_rows"]
    assert all(row.count("<tr>") == 1 + 2 for row in rows)  # the header and the top 2 contributions
    assert "$.request.imp[0].banner.w" in html[refused_at:rows_at]


def test_ctr_lines_are_explained_by_line_with_the_training_contributions(
    ctr_model: TrainedModel, ipinyou_rows: pd.DataFrame, tmp_path: Path
) -> None:
    folder = save_model(ctr_model, tmp_path / "ctr-model")
    frame = ipinyou_rows.tail(5)
    instances = _instances(frame, ctr_model.spec.names)
    lines = [
        json.dumps({"instances": instances[:3]}),  # 1: a v1 body of three rows
        json.dumps(instances[3]),  # 2: a bare instance
        json.dumps({"no_such_field": 1}),  # 3: refused
        "]",  # 4: not JSON
        json.dumps(instances[4]),  # 5
    ]
    path = _write(tmp_path / "ctr.jsonl", lines)
    result = _invoke(str(path), "--kind", "ctr", "--model", str(folder), "--format", "json", "--top", "0")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    expected = contributions(ctr_model, ctr_model.matrix(frame))
    explained = [row for answer in body["explanations"] for row in answer["explanations"]]
    assert [a["line"] for a in body["explanations"]] == [1, 2, 5]
    for i, row in enumerate(explained):
        _check_row(row, expected, i, len(ctr_model.spec.names))
    assert [(r["line"], r["field"]) for r in body["refused"]] == [(3, "$.no_such_field"), (4, "$")]

    table = _invoke(str(path), "--kind", "ctr", "--model", str(folder), "--top", "1").stdout
    titles = [block.splitlines()[0] for block in table.split("\n\n")[1:] if block.startswith("line ")]
    assert titles == ["line 1, row 1", "line 1, row 2", "line 1, row 3", "line 2", "line 5"]
    assert f"score {expected.scores[3]:.4f}" in table


def test_a_file_with_nothing_to_explain_exits_1_and_says_why(model_dir: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", ["nope", '{"request": {"id": "a"}}'])
    result = CliRunner().invoke(cli, ["explain", str(path), "--model", str(model_dir)])
    assert result.exit_code == 1
    assert "line 1: $:" in result.stdout and "line 2: $.request" in result.stdout
    assert "no line could be explained" in result.stderr


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("missing.jsonl",), InputError, "request file not found"),
        (("{file}", "--kind", "no_such_kind"), ConfigError, "unknown model kind"),
        (("{file}", "--model", "{empty}"), ModelError, "is not ready"),
        (("{file}", "--top", "100000", "--model", "{model}"), InputError, "contributions to show per row"),
    ],
)
def test_user_mistakes_are_bidflow_errors(
    tmp_path: Path, model_dir: Path, args: tuple[str, ...], error: type[Exception], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    path = _write(tmp_path / "one.jsonl", ["{}"])
    filled = [a.format(file=path, empty=tmp_path / "empty", model=model_dir) for a in args]
    result = CliRunner().invoke(cli, ["explain", *filled])
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception)


def test_the_installed_command_explains_and_fails_cleanly(bid_requests: Path, model_dir: Path, tmp_path: Path) -> None:
    bidflow = Path(sys.executable).parent / "bidflow"  # the console script of this environment
    env = os.environ | {"COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bidflow), "explain", *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=300)  # fmt: skip

    done = run(str(bid_requests), "--model", str(model_dir), "--format", "json", "--top", "1")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["explained_lines"] == 4 and len(body["refused"]) == 2
    assert all(math.isfinite(p["score"]) for a in body["explanations"] for p in a["explanations"][0]["partners"])
    for args, code, message in (
        (("missing.jsonl",), 2, "request file not found"),
        ((str(bid_requests), "--kind", "no_such_kind"), 2, "unknown model kind"),
        ((str(bid_requests), "--model", str(tmp_path)), 1, "the bid_filter model is not ready"),
    ):
        failed = run(*args)
        assert failed.returncode == code, failed.stderr
        assert message in failed.stderr and "Traceback" not in failed.stderr
