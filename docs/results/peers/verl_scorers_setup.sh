#!/bin/bash
# Environment for /tmp/verlcheck_run.py (verl snapshot fetched first with the `fetch` tool: github:volcengine/verl
# -> /work/.mirror/volcengine+verl/repo, HEAD b178a3cd56f58b2d502255daba591e92833930a7).
set -e
git clone -q /work/main /tmp/verlcheck                                   # aha f4694eb
python3 -m venv /tmp/vv
/tmp/vv/bin/pip install -q torch==2.13.0
/tmp/vv/bin/pip install -q -e "/tmp/verlcheck[test]"                     # math-verify 0.9.0, sympy 1.14.0
/tmp/vv/bin/pip install -q pylatexenc mathruler                          # verl's prime_math / geo3k deps
mkdir -p /tmp/verlref && cd /tmp/verlref
G="git --git-dir=/work/.mirror/volcengine+verl/repo"
$G archive HEAD verl/utils/reward_score verl/utils/py_functional.py verl/utils/metric verl/utils/import_utils.py | tar x
touch verl/__init__.py verl/utils/__init__.py                             # skip verl's heavy package __init__
$G rev-parse HEAD > /tmp/verlref/VERL_COMMIT
/tmp/vv/bin/python /tmp/verlcheck_run.py > /tmp/verlcheck_out.txt
