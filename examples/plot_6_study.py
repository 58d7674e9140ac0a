"""
A study from a tiny results database
====================================

A study file declares a sweep; ``connsim study run`` runs its tasks on a local Dask cluster into
an SQLite database beside the file, and :func:`~connsim.studyresults.plot_figure` draws a figure
the file declares: markers are the mean ± std over the seeds of the measured effective compression
of random masks, lines the theory. This example writes the study into a temporary folder, runs
its 16 tasks on one worker process, and reads the database back in Python.

The run goes through the command line in a child process. From Python,
:func:`~connsim.studyrun.run_study` does the same, but a local Dask cluster starts its workers as
new processes that re-import the calling script, so a script that calls it must guard the call
with ``if __name__ == "__main__":``.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt

from connsim.study import load_study
from connsim.studydb import ResultsDB
from connsim.studyresults import plot_figure, progress, results

STUDY = """
name = "gallery"
kind = "measure"
description = "Random pruning of LeNet-5 under two quota rules"

[axes]
rule = ["uniform", "igq"]
compression = { geomspace = [10, 300, 4] }
seed = [0, 1]

[settings]
arch = "lenet-5"
level = "position"
theory = true

[figures.effective]
title = "LeNet-5, random pruning, position level"
x = "direct_compression"
y = "effective_compression"
curves = ["rule"]
theory = "theory_effective_compression"
"""

folder = tempfile.mkdtemp(prefix="connsim-gallery-")
path = os.path.join(folder, "gallery.toml")
with open(path, "w") as f:
    f.write(STUDY)

run = [sys.executable, "-m", "connsim", "study", "run", path, "--workers", "1", "--no-progress"]
print(subprocess.run(run, check=True, capture_output=True, text=True).stdout)

study = load_study(path)
with ResultsDB(study.database) as db:
    print(progress(study, db))
    rows = results(study, db)

fig = plot_figure(study, rows, "effective")
plt.show()
shutil.rmtree(folder)
