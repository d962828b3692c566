"""Matching and F1 (hrtemnet.metrics) and the `hrtemnet score` command."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.columns import Columns, write_columns_csv
from hrtemnet.metrics import ImageScore, match_columns, mean_f1, score_image, total_score

SIZE = (20.0, 20.0)
MO, S2, S = 0, 1, 2


def cols(*points):
    """Columns from (x, y, class) triples."""
    if not points:
        return Columns.empty()
    array = np.array(points, dtype=float)
    return Columns(array[:, :2], array[:, 2].astype(int))


def test_two_predictions_near_one_column_give_one_tp_and_one_fp():
    score = score_image(cols((10, 10, MO)), cols((10.1, 10, MO), (10, 10.2, MO)), SIZE)
    assert (score.tp, score.fp, score.fn) == (1, 1, 0)
    assert score.f1 == pytest.approx(2 / 3)
    assert score.rms_error_A == pytest.approx(0.1)  # the nearer prediction is the match


def test_class_swap_gives_one_fp_and_one_fn():
    score = score_image(cols((10, 10, S2)), cols((10.1, 10, S)), SIZE)
    assert (score.tp, score.fp, score.fn) == (0, 1, 1)
    assert score.f1 == 0.0 and score.position_f1 == 1.0
    assert score.per_class["S2"].fn == 1 and score.per_class["S"].fp == 1
    assert score.confusion[S2, S] == 1


def test_prediction_beyond_radius_is_not_matched():
    score = score_image(cols((10, 10, MO)), cols((10.51, 10, MO)), SIZE)
    assert (score.tp, score.fp, score.fn) == (0, 1, 1)


def test_matching_maximises_pairs_where_nearest_first_would_not():
    # Nearest-first pairs the middle prediction with the right column and leaves two unmatched.
    truth = cols((10, 10, MO), (10.9, 10, MO))
    pred = cols((10.49, 10, MO), (11.35, 10, MO))
    assert score_image(truth, pred, SIZE).tp == 2


def test_border_band_is_left_out_on_both_sides():
    truth = cols((1.5, 10, MO), (10, 10, MO), (10, 18.5, S2))
    pred = cols((10, 10, MO), (19, 5, S), (2.5, 2.5, S))  # the last one is inside: a false column
    score = score_image(truth, pred, SIZE)
    assert (score.n_true, score.n_pred, score.tp, score.fp, score.fn) == (1, 2, 1, 1, 0)
    assert score_image(truth, pred, SIZE, border_A=0).n_true == 3


# A non-square field, 30 Å wide (x) and 20 Å high (y): columns on both sides of every edge of the 2 Å band.
# The band is closed: a column exactly 2.0 Å from an edge is scored (`inside_border` uses >= and <=).
WIDE = (30.0, 20.0)
EDGE_COLUMNS = [  # (x, y, counted)
    (1.99, 10.0, False), (2.0, 10.0, True),  # left edge; exactly 2.0 Å is in
    (28.0, 10.0, True), (28.01, 10.0, False),  # right edge at width - 2
    (15.0, 1.99, False), (15.0, 2.0, True),  # bottom edge (y = 0)
    (15.0, 18.0, True), (15.0, 18.01, False),  # top edge at height - 2
    (25.0, 10.0, True), (26.0, 5.0, True),  # inside only because the field is 30 Å wide (not 20)
    (10.0, 19.0, False),  # out only because the field is 20 Å high (not 30)
]  # 6 counted; with width and height swapped 5 others would be, so even the count tells them apart


def test_border_band_on_a_non_square_field_is_closed_at_exactly_two_angstrom():
    from hrtemnet.metrics import inside_border

    xy = np.array([(x, y) for x, y, _ in EDGE_COLUMNS])
    expected = np.array([counted for _, _, counted in EDGE_COLUMNS])
    np.testing.assert_array_equal(inside_border(xy, WIDE, 2.0), expected)
    truth = cols(*[(x, y, MO) for x, y, _ in EDGE_COLUMNS])
    score = score_image(truth, Columns.empty(), WIDE)
    assert score.n_true == expected.sum() == 6  # all missed: each counted column is one false negative
    score = score_image(Columns.empty(), truth, WIDE)
    assert score.n_pred == 6  # the same cut on the predicted side
    score = score_image(truth, truth, WIDE)
    assert (score.tp, score.fp, score.fn) == (6, 0, 0)


def test_score_command_uses_width_for_x_and_height_for_y(tmp_path):
    points = [(x, y, MO) for x, y, _ in EDGE_COLUMNS]
    write_csv(tmp_path / "t.csv", points)
    write_csv(tmp_path / "p.csv", [])
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(app, ["score", str(tmp_path / "t.csv"), str(tmp_path / "p.csv"),
                                      "--width-A", "30", "--height-A", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        row = next(csv.DictReader(f))
    assert int(row["n_true"]) == 6 and int(row["fn"]) == 6


@pytest.mark.parametrize(
    ("truth", "pred", "f1"),
    [
        (cols(), cols(), 1.0),  # nothing to find and nothing found
        (cols((10, 10, MO)), cols(), 0.0),
        (cols(), cols((10, 10, MO)), 0.0),
        (cols((0.5, 0.5, MO)), cols((19.5, 0.5, S)), 1.0),  # everything in the border band
    ],
)
def test_empty_cases(truth, pred, f1):
    score = score_image(truth, pred, SIZE)
    assert score.f1 == f1 and score.position_f1 == f1
    assert all(0.0 <= s.precision <= 1.0 and 0.0 <= s.recall <= 1.0 for s in score.per_class.values())


def test_total_score_pools_counts():
    a = score_image(cols((10, 10, MO)), cols((10, 10, MO)), SIZE)
    b = score_image(cols((10, 10, S2)), cols((10, 10, S)), SIZE)
    total = total_score([a, b])
    assert (total.tp, total.fp, total.fn) == (1, 1, 1)
    assert total.per_class["Mo"].f1 == 1.0 and total.per_class["S2"].f1 == 0.0
    assert total_score([]).f1 == 1.0 and isinstance(total, ImageScore)


def test_match_columns_empty():
    ti, pi, d = match_columns(np.zeros((0, 2)), np.ones((3, 2)))
    assert len(ti) == len(pi) == len(d) == 0


def test_match_radius_is_inclusive_and_is_passed_on():
    """A prediction exactly 0.5 Å away is matched ("within 0.5 Å"); `match_radius_A` reaches the matching."""
    assert score_image(cols((10, 10, MO)), cols((10.5, 10, MO)), SIZE).tp == 1
    far = (cols((10, 10, MO)), cols((10.8, 10, MO)), SIZE)
    assert score_image(*far).tp == 0 and score_image(*far, match_radius_A=1.0).tp == 1


@pytest.mark.parametrize("radius", [0.1, 0.5, 2.0])
def test_matching_keeps_the_most_pairs_along_a_long_chain(radius):
    """t0 p0 t1 p1 ... on a line, t_i-p_i 0.98 r apart (all allowed), p_i-t_i+1 0.02 r apart.

    All n long pairs is the only maximum matching; the n - 1 short pairs cost far less in total. An assignment
    cost for forbidden pairs below ~n r would trade the long pairs for the short ones and drop one pair.
    """
    n = 6
    truth_x = np.arange(n) * radius
    pred_x = truth_x + 0.98 * radius
    truth, pred = np.c_[truth_x, np.zeros(n)], np.c_[pred_x, np.zeros(n)]
    ti, pi, d = match_columns(truth, pred, radius)
    assert sorted(zip(ti.tolist(), pi.tolist(), strict=True)) == [(i, i) for i in range(n)]
    np.testing.assert_allclose(d, 0.98 * radius)


def test_an_allowed_pair_beats_any_forbidden_one_at_large_radius():
    """One true column, a prediction 1.9 Å away (allowed at radius 2 Å) and one 5 Å away: the assignment cost of
    the forbidden pair must exceed every allowed distance, not just 1 Å."""
    ti, pi, _ = match_columns(np.array([[10.0, 10.0]]), np.array([[15.0, 10.0], [11.9, 10.0]]), 2.0)
    assert ti.tolist() == [0] and pi.tolist() == [1]


def test_image_match_marks_which_columns_are_right():
    """The masks the overlay figures colour by: predictions matched with the right class, true columns found."""
    from hrtemnet.metrics import match_image

    truth = cols((5, 5, MO), (10, 10, S2), (15, 15, S), (1, 1, MO))  # the last one is in the border band
    pred = cols((15.2, 15, S), (10, 10.1, MO), (5.1, 5, MO), (12, 5, S2))  # right, wrong class, right, false
    match = match_image(truth, pred, SIZE)
    assert len(match.truth) == 3 and len(match.pred) == 4
    assert match.correct_pred().dtype == match.found_truth().dtype == bool  # boolean masks, to index with
    assert match.correct_pred().tolist() == [True, False, True, False]
    assert match.found_truth().tolist() == [True, False, True]


def test_pooled_scores_and_rms_error_over_images():
    a = score_image(cols((10, 10, MO), (5, 5, S2)), cols((10.3, 10, MO), (5, 5.4, S2)), SIZE)
    b = score_image(cols((10, 10, S)), cols((10, 10.1, S), (15, 15, MO)), SIZE)
    total = total_score([a, b])
    assert (total.tp, total.fp, total.fn, total.n_true, total.n_pred) == (3, 1, 0, 3, 4)
    assert total.rms_error_A == pytest.approx(np.sqrt((0.3**2 + 0.4**2 + 0.1**2) / 3))
    assert (a + b).squared_error_sum_A2 == pytest.approx(0.3**2 + 0.4**2 + 0.1**2)
    assert mean_f1([a, b]) == pytest.approx((a.f1 + b.f1) / 2) and b.f1 == pytest.approx(2 / 3)
    assert np.isnan(mean_f1([])) and np.isnan(score_image(cols(), cols(), SIZE).rms_error_A)


def test_score_row_fields():
    score = score_image(cols((10, 10, MO), (5, 5, S2)), cols((10.3, 10, MO), (5, 5, S)), SIZE)
    assert score.as_row() == pytest.approx({
        "f1": 0.5, "position_f1": 1.0, "f1_Mo": 1.0, "f1_S2": 0.0, "f1_S": 0.0,
        "tp": 1, "fp": 1, "fn": 1, "n_true": 2, "n_pred": 2, "rms_error_A": np.sqrt(0.3**2 / 2),
    })
    assert list(score.as_row()) == ["f1", "position_f1", "f1_Mo", "f1_S2", "f1_S", "tp", "fp", "fn", "n_true",
                                    "n_pred", "rms_error_A"]


# ---- an independent implementation of DESIGN.md's F1, and `hrtemnet score` against it ----------


def brute_force_f1(truth, pred, size, radius=0.5, border=2.0):
    """Exhaustive matching per connected group of nearby columns: most pairs, then least distance."""

    def inside(p):
        return border <= p[0] <= size[0] - border and border <= p[1] <= size[1] - border

    t = [(x, y, c) for x, y, c in truth if inside((x, y))]
    p = [(x, y, c) for x, y, c in pred if inside((x, y))]
    near = {
        (i, j): np.hypot(t[i][0] - p[j][0], t[i][1] - p[j][1]) for i in range(len(t)) for j in range(len(p))
    }
    near = {k: d for k, d in near.items() if d <= radius}
    # connected groups of true ('t', i) and predicted ('p', j) columns
    group_of = {}
    for start in [("t", i) for i in range(len(t))] + [("p", j) for j in range(len(p))]:
        if start in group_of:
            continue
        stack, group_of[start] = [start], start
        while stack:
            side, k = stack.pop()
            others = (
                [("p", j) for (i, j) in near if i == k]
                if side == "t"
                else [("t", i) for (i, j) in near if j == k]
            )
            for other in others:
                if other not in group_of:
                    group_of[other] = start
                    stack.append(other)
    tp = 0
    for root in set(group_of.values()):
        edges = [(i, j) for (i, j) in near if group_of[("t", i)] == root]
        best = (0, 0.0, ())
        for r in range(len(edges), 0, -1):
            for subset in itertools.combinations(edges, r):
                ts, ps = [e[0] for e in subset], [e[1] for e in subset]
                if len(set(ts)) == r and len(set(ps)) == r:
                    key = (r, -sum(near[e] for e in subset), subset)
                    if key[:2] > best[:2]:
                        best = key
            if best[0]:
                break  # fewer pairs cannot beat a matching of r pairs
        tp += sum(t[i][2] == p[j][2] for i, j in best[2])
    fp, fn = len(p) - tp, len(t) - tp
    return 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def random_image(rng, size=SIZE):
    """A MoS2-like honeycomb of columns and a perturbed prediction of it (as (x, y, class) lists)."""
    a, truth = 3.16, []
    shift = rng.uniform(0, a, 2)
    for i, j in itertools.product(range(-8, 12), repeat=2):
        x, y = shift[0] + (i + j / 2) * a, shift[1] + j * a * np.sqrt(3) / 2
        for dx, dy, c in ((0, 0, MO), (a / 2, a / (2 * np.sqrt(3)), S2 if rng.random() > 0.1 else S)):
            if 0 <= x + dx <= size[0] and 0 <= y + dy <= size[1]:
                truth.append((x + dx, y + dy, c))
    pred = []
    for x, y, c in truth:
        if rng.random() < 0.1:
            continue  # missed
        c_pred = int(rng.integers(3)) if rng.random() < 0.15 else c
        pred.append((x + rng.normal(0, 0.25), y + rng.normal(0, 0.25), c_pred))
        if rng.random() < 0.1:  # duplicate near the same column
            pred.append((x + rng.normal(0, 0.3), y + rng.normal(0, 0.3), c))
    pred += [(*rng.uniform(0, size[0], 2), int(rng.integers(3))) for _ in range(3)]
    return truth, pred


def write_csv(path, points):
    write_columns_csv(path, cols(*points) if points else Columns.empty())


def test_score_command_agrees_with_brute_force(tmp_path):
    rng = np.random.default_rng(7)
    expected = {}
    for k in range(6):
        truth, pred = random_image(rng)
        write_csv(tmp_path / "truth" / f"img{k}.csv", truth)
        write_csv(tmp_path / "pred" / f"img{k}.csv", pred)
        expected[f"img{k}.csv"] = brute_force_f1(truth, pred, SIZE)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(tmp_path / "truth"),
            str(tmp_path / "pred"),
            "--width-A",
            "20",
            "--height-A",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(out) as f:
        got = {row["image"]: float(row["f1"]) for row in csv.DictReader(f)}
    assert got.keys() == expected.keys()
    for name, f1 in expected.items():
        assert got[name] == pytest.approx(f1, abs=1e-3), name
    assert 0.3 < np.mean(list(expected.values())) < 0.95  # the perturbations do matter
    mean_line = [line for line in result.output.splitlines() if "mean F1" in line][0]
    assert float(mean_line.split("mean F1")[1].split()[0]) == pytest.approx(
        np.mean(list(expected.values())), abs=1e-3
    )


def read_score_rows(path):
    with open(path) as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def test_score_command_default_extent_is_truth_bounding_box(tmp_path):
    """Without --width-A/--height-A the true columns' bounding box stands in for the image (origin included)."""
    truth = [(10 + 1.5 * i, 30 + 1.5 * j, MO) for i in range(9) for j in range(9)]  # box x 10..22, y 30..42
    # the predictions miss the top row (in the border band) and one interior column (16, 36): their own box
    # would end at y = 40.5 and leave out another row
    pred = [p for p in truth if p[1] < 42 and p[:2] != (16, 36)]
    write_csv(tmp_path / "t.csv", truth)
    write_csv(tmp_path / "p.csv", pred)
    write_csv(tmp_path / "empty.csv", [])
    out = tmp_path / "nested" / "folder" / "scores.csv"  # --out creates missing folders
    result = CliRunner().invoke(app, ["score", str(tmp_path / "t.csv"), str(tmp_path / "p.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = read_score_rows(out)["p.csv"]
    # inside the 2 Å band of the box: x and y in 5 of the 9 grid lines each
    assert (int(row["n_true"]), int(row["tp"]), int(row["fn"]), int(row["fp"])) == (25, 24, 1, 0)
    assert "mean F1 0.9796" in result.output  # 48 / 49
    result = CliRunner().invoke(app, ["score", str(tmp_path / "t.csv"), str(tmp_path / "p.csv"), "--out", str(out),
                                      "--border-A", "0"])
    assert int(read_score_rows(out)["p.csv"]["n_true"]) == 81
    # no true columns: the predictions' box stands in, and every prediction is a false column
    result = CliRunner().invoke(app, ["score", str(tmp_path / "empty.csv"), str(tmp_path / "p.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = read_score_rows(out)["p.csv"]
    assert (int(row["n_true"]), int(row["fp"]), float(row["f1"])) == (0, 19, 0.0)  # 4 rows x 5, less (16, 36)


def test_score_command_bad_inputs_exit_2(tmp_path):
    runner = CliRunner()
    write_csv(tmp_path / "t" / "a.csv", [(10, 10, MO)])
    write_csv(tmp_path / "t" / "b.csv", [(10, 10, MO)])
    write_csv(tmp_path / "p" / "a.csv", [(10, 10, MO)])
    (tmp_path / "p" / "b.csv").write_text("x_A,y_A,class\n1,2,Zr\n")  # unknown class
    write_csv(tmp_path / "p" / "c.csv", [(10, 10, MO)])  # no truth for it
    write_csv(tmp_path / "t" / "d.csv", [(10, 10, MO)])  # no prediction for it

    result = runner.invoke(app, ["score", str(tmp_path / "t"), str(tmp_path / "p"), "--border-A", "0"])
    assert result.exit_code == 2
    assert "mean F1 1.0000 over 1 image" in result.output  # a.csv is still scored
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "b.csv" in output and "c.csv: no truth in" in output and "d.csv: no prediction in" in output

    for args in (
        [str(tmp_path / "missing.csv"), str(tmp_path / "p" / "a.csv")],
        [str(tmp_path / "t" / "a.csv"), str(tmp_path / "p")],  # file and folder
        [str(tmp_path / "t" / "a.csv"), str(tmp_path / "p" / "b.csv")],  # unreadable CSV
        [str(tmp_path / "t" / "a.csv"), str(tmp_path / "p" / "a.csv"), "--match-radius-A", "0"],
    ):
        result = runner.invoke(app, ["score", *args])
        assert result.exit_code == 2, args
        assert "error:" in result.output and "Traceback" not in result.output
    def one_line_output(*args):
        return " ".join(runner.invoke(app, ["score", *map(str, args)]).output.split())

    output = one_line_output(tmp_path / "nope.csv", tmp_path / "p" / "a.csv")
    assert "truth path" in output and "does not exist" in output
    output = one_line_output(tmp_path / "t" / "a.csv", tmp_path / "nope.csv")
    assert "prediction path" in output and "does not exist" in output
    output = one_line_output(tmp_path / "t" / "a.csv", tmp_path / "p")
    assert "two CSV files or two folders" in output
    # a file the reader refuses, naming it, is named once, not again by the scorer
    bad = tmp_path / "binary.csv"
    bad.write_bytes(b"\x00\xff\xfe binary")
    output = "".join(runner.invoke(app, ["score", str(tmp_path / "t" / "a.csv"), str(bad)]).output.split())
    assert output.count("".join(str(bad).split())) == 1, output


def test_columns_from_a_predict_table_keep_position_class_and_score():
    pd = pytest.importorskip("pandas")
    from hrtemnet.errors import UserError

    table = pd.DataFrame({"x_A": [1.0, 2.5], "y_A": [3.0, 4.5], "class": ["S", "Mo"], "score": [0.7, 0.9]})
    columns = Columns.from_table(table)
    assert columns.xy_A.tolist() == [[1.0, 3.0], [2.5, 4.5]]  # (x, y), not (row, col)
    assert columns.class_index.tolist() == [2, 0]
    assert columns.score.tolist() == [0.7, 0.9]
    assert len(Columns.from_table(table.iloc[:0])) == 0
    with pytest.raises(UserError, match="unknown column class"):
        Columns.from_table(table.assign(**{"class": ["S", "W"]}))
