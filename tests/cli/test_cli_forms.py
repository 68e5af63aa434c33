"""calibkit.cli.forms: label words ranked from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_tools import one_line_error, run


# -- forms -----------------------------------------------------------------------------
def test_forms_prints_every_candidate_and_the_verbalizer_found(tmp_path, local_model) -> None:
    import json

    import numpy as np
    import pandas as pd

    import calibkit as ck
    from calibkit.datasets import load_dataset

    out = tmp_path / "forms.csv"
    r = run("forms", "sentiment", "--limit", "60", "--proposed", "2", "--cv", "3",
            "--candidates", '{"negative": [" negative", " bad"], "positive": [" positive", " good"]}',
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "calibkit: searching label words on 60 examples with google/gemma-3-270m (2 proposed per class" in r.stderr
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 8 and (table["source"] == "model").sum() == 4
    for form in table["form"]:
        assert form.strip() in r.stdout
    found = json.loads(r.stdout.split("found: --verbalizer '")[1].split("'\n")[0])
    best = table[table["chosen"]]
    assert found == dict(zip(best["class"], best["form"]))
    # the same search in Python gives the same table
    rows = load_dataset("sentiment").frame.head(60)
    res = ck.search_forms(rows[["text"]], rows["label"].tolist(), load_dataset("sentiment").template, local_model,
                          candidates={"negative": [" negative", " bad"], "positive": [" positive", " good"]},
                          n_proposed=2, cv=3, progress=False)
    assert res.table["form"].tolist() == table["form"].tolist()
    np.testing.assert_allclose(res.table["cv_nll"], table["cv_nll"], rtol=1e-5)


@pytest.mark.parametrize("argv, words", [
    (["--proposed", "-1"], "--proposed must be 0 or more"),
    (["--cv", "1"], "--cv must be at least 2"),
    (["--calibration", "isotonic+temperature"], "--calibration isotonic+temperature: the binning 'isotonic' cannot"),
    (["--candidates", "[1, 2]"], "--candidates must be a JSON object"),
    (["--candidates", "{nope"], "--candidates must be a JSON object of class -> form(s)"),
    (["--out", "table.txt"], "--out writes a .csv file"),
])
def test_forms_flags_are_checked_before_the_model_is_touched(capsys, no_model, argv, words) -> None:
    assert words in one_line_error(capsys, ["forms", "sentiment", *argv])


def test_forms_over_an_api_without_candidates_names_the_flag(capsys) -> None:
    from calibkit.cli import main

    code = main(["forms", "sentiment", "--limit", "20", "--stratify", "--api-base", "http://127.0.0.1:9/v1",
                 "--model", "x", "--candidates", '{"negative": [], "positive": [" good"]}'])
    err = capsys.readouterr().err
    assert code == 1 and "give --candidates for every class" in err and "Traceback" not in err
