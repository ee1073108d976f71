"""The learner's path: the tutorial runs end to end (tiny settings) and leaves its
pictures, the committed notebook is the script's cells, and every relative link of
the README and docs/ points to a file that exists."""

import glob
import os
import re
import subprocess
import sys

import jupytext

from scripts import ROOT

TUTORIAL = os.path.join(ROOT, "docs", "tutorial.py")


def test_the_tutorial_runs_and_leaves_its_pictures():
    env = dict(os.environ, TUTORIAL_TINY="1")
    out = subprocess.run([sys.executable, TUTORIAL], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout
    assert "training on 16, validating on 32" in printed
    assert re.search(r"epoch 1: loss [\d.]+, train accuracy", printed)
    assert "pixel accuracy, the article's way:" in printed and "mean IoU" in printed
    assert "last.keras predicts what the trained model does: True" in printed
    run = os.path.join(ROOT, "runs", "tutorial")
    for picture in ("samples.png", "predictions.png",
                    os.path.join("gcn", "learning_curve.png")):
        path = os.path.join(run, picture)
        assert os.path.getsize(path) > 2000, picture
        assert f"picture: runs/tutorial/{picture}" in printed
    assert not os.path.exists(os.path.join(ROOT, "docs", "runs"))  # nothing in docs/


def test_the_notebook_is_the_scripts_cells():
    script = jupytext.read(TUTORIAL)
    notebook = jupytext.read(os.path.join(ROOT, "docs", "tutorial.ipynb"))
    assert [(c.cell_type, c.source) for c in notebook.cells] == \
        [(c.cell_type, c.source) for c in script.cells]
    assert not any(c.get("outputs") for c in notebook.cells)  # sources only


def test_every_relative_link_points_to_a_file():
    pages = [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs",
                                                                        "*.md"))
    broken = []
    for page in pages:
        text = open(page, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address, or a place on the same page
            path = os.path.join(os.path.dirname(page), target.split("#")[0])
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, ROOT)} -> {target}")
    assert broken == []
