"""A fork bomb in one sandbox beside a correct program in another (as two reward workers run them): does the
correct one's result change, and is it a timeout (CPU starvation) or an error (uid nobody's shared NPROC)?"""
import threading, time
from aha.rewards.code import run_program

BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
SPIN = "while True:\n    pass"
GOOD = "print(sum(range(1000)))"


def trial(attack, n_attack_threads=1, n=12):
    stop = time.monotonic() + 6
    def attacker():
        while time.monotonic() < stop:
            run_program(attack, timeout=1.0)
    ts = [threading.Thread(target=attacker) for _ in range(n_attack_threads)]
    [t.start() for t in ts]
    time.sleep(0.3)
    res = []
    for _ in range(n):
        t = time.monotonic()
        st, out = run_program(GOOD, timeout=1.0)
        res.append((st, round(time.monotonic() - t, 2)))
    [t.join() for t in ts]
    return res


if __name__ == "__main__":
    print("baseline", trial("pass", 1))
    print("beside fork bomb", trial(BOMB, 1))
    print("beside 1 cpu spinner", trial(SPIN, 1))
