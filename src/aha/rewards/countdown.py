"""Countdown reward (TinyZero's task): combine the given numbers with + - * / into the target.

    countdown_reward = 1  iff  the answer is an expression over integers, + - * /, parentheses (and unary
                              minus) that uses every given number exactly once (as a multiset) and whose
                              exact rational value (fractions.Fraction) equals the target; else 0.

The expression is read by a small tokenizer and recursive-descent parser written here -- never `eval` -- with
bounded length and nesting, so any model output is judged in microseconds. An optional trailing "= <target>"
is allowed ("(6+4)*3 = 30"); "×", "÷" and "−" are read as *, / and -. Division by zero scores 0.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from aha.rewards.format import extract_answer

MAX_CHARS = 512  # countdown answers are ~20 characters; longer is not an honest answer
MAX_DEPTH = 64  # parenthesis nesting bound (the parser recurses once per level)

_TOKEN = re.compile(r"\s*(?:(\d+)|([-+*/()]))")


class _ParseError(Exception):
    pass


def tokenize(expr: str) -> list[int | str]:
    """Integers and the characters + - * / ( ); anything else raises _ParseError."""
    tokens: list[int | str] = []
    pos, n = 0, len(expr)
    while pos < n:
        m = _TOKEN.match(expr, pos)
        if m is None:
            if expr[pos:].strip() == "":
                break
            raise _ParseError(f"unexpected character {expr[pos]!r}")
        tokens.append(int(m[1]) if m[1] is not None else m[2])
        pos = m.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*; unary := '-' unary | atom;
    atom := INT | '(' expr ')'. Values are Fractions; the integer literals used are collected."""

    def __init__(self, tokens: list[int | str]):
        self.tokens, self.i, self.depth, self.numbers = tokens, 0, 0, []

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise _ParseError("division by zero")
            else:
                value = value / rhs
        return value

    def unary(self) -> Fraction:
        if self.peek() == "-":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _ParseError("nesting too deep")
            value = -self.unary()
            self.depth -= 1
            return value
        return self.atom()

    def atom(self) -> Fraction:
        tok = self.take()
        if isinstance(tok, int):
            self.numbers.append(tok)
            return Fraction(tok)
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _ParseError("nesting too deep")
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("missing )")
            self.depth -= 1
            return value
        raise _ParseError(f"unexpected token {tok!r}")


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value of `expr` and the integer literals it uses; raises _ParseError on anything else."""
    parser = _Parser(tokenize(expr))
    value = parser.expr()
    if parser.peek() is not None:
        raise _ParseError(f"trailing token {parser.peek()!r}")
    return value, parser.numbers


def _normalise(answer: str) -> str:
    # "x" is a multiplication sign only between operands ("3 x 4"); any other letter makes the answer invalid.
    answer = answer.replace("×", "*").replace("÷", "/").replace("−", "-").replace("\\times", "*")
    answer = answer.replace("\\div", "/").replace("\\cdot", "*")
    return re.sub(r"(?<=[\d)\s])x(?=[\s(\d])", "*", answer)


def countdown_reward(completion: str, numbers, target) -> float:
    """1.0 iff the extracted answer uses each of `numbers` once and equals `target` exactly; else 0.0."""
    try:
        answer = extract_answer(completion)
        if not answer or len(answer) > MAX_CHARS:
            return 0.0
        answer = _normalise(answer.replace("$", ""))
        if answer.count("=") > 1:
            return 0.0
        if "=" in answer:  # "expr = target": the right side must be the target itself
            answer, rhs = answer.split("=")
            if not re.fullmatch(r"\s*-?\d+\s*", rhs) or Fraction(int(rhs)) != Fraction(target):
                return 0.0
        value, used = evaluate(answer)
        if Counter(used) != Counter(int(x) for x in numbers):
            return 0.0
        return 1.0 if value == Fraction(target) else 0.0
    except Exception:  # total: malformed rows or answers score 0, never raise into the trainer
        return 0.0
