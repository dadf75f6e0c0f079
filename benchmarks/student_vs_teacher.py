"""Print, per target and backend, how much faster each student artifact is than the teacher on
the same runtime, and the accuracy of both. Reads a results file alone.

    python benchmarks/student_vs_teacher.py runs/default/results.json
"""

import sys

from edgedistill.api import speedups
from edgedistill.report.results import load_results

if __name__ == "__main__":
    for line in speedups(load_results(sys.argv[1] if len(sys.argv) > 1 else "runs/default/results.json")):
        print(line)
