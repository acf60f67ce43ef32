import sys
sys.argv = sys.argv[:1]
from code_forkbomb import trial, BOMB
errs = n = 0
for _ in range(4):
    r = trial(BOMB, 1, n=15)
    errs += sum(s != "ok" for s, _ in r); n += len(r)
print(f"errors {errs} of {n}")
